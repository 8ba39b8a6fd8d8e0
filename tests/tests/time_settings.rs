//! The stack's clock: every template parameter that sets a schedule or a wait has the
//! default the README's "The clock" table says, and the table lists every one of them. The
//! end-to-end tests deploy smaller values of some of these same parameters (the table's last
//! column) so they need no five-minute wait; production keeps the defaults, and this test
//! fails when a default changes without the README, or a new timing parameter comes without a
//! row.

use std::collections::BTreeMap;

fn read(path: &str) -> String {
    let full = local_cloud::project_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// `Parameters:` of template.yaml: name -> default (as written), for every parameter that
/// has one.
fn template_defaults(template: &str) -> BTreeMap<String, String> {
    let mut defaults = BTreeMap::new();
    let mut in_parameters = false;
    let mut current: Option<String> = None;
    for line in template.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_parameters = line.trim_end() == "Parameters:";
            current = None;
            continue;
        }
        if !in_parameters {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim();
        if indent == 2 && trimmed.ends_with(':') {
            current = Some(trimmed.trim_end_matches(':').to_string());
        } else if indent == 4
            && let (Some(name), Some(value)) = (&current, trimmed.strip_prefix("Default:"))
        {
            defaults.insert(name.clone(), value.trim().trim_matches('"').to_string());
        }
    }
    defaults
}

/// The README's clock table: parameter -> default, from rows `| `Name` | `default` | ...`.
fn readme_clock(readme: &str) -> BTreeMap<String, String> {
    let section = readme
        .split("### The clock: ")
        .nth(1)
        .expect("README has a section '### The clock: ...'");
    let section = section.split("\n#").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = cells.get(1)?.trim_matches('`');
            let default = cells.get(2)?.trim_matches('`');
            Some((name.to_string(), default.to_string()))
        })
        .collect()
}

/// A parameter that paces the system: a schedule, or a number of seconds.
fn is_clock(name: &str) -> bool {
    name.ends_with("Schedule") || name.ends_with("Seconds")
}

#[test]
fn the_readme_states_every_timing_default_the_template_deploys() {
    let defaults = template_defaults(&read("template.yaml"));
    let clock: BTreeMap<&String, &String> =
        defaults.iter().filter(|(name, _)| is_clock(name)).collect();
    assert!(
        clock.len() >= 8,
        "the template's timing parameters were not found: {defaults:?}"
    );
    let readme = readme_clock(&read("README.md"));
    for (name, default) in &clock {
        let stated = readme.get(*name).unwrap_or_else(|| {
            panic!("README's clock table has no row for {name} (template default {default})")
        });
        assert_eq!(
            stated, *default,
            "README says {name} defaults to {stated}, template.yaml deploys {default}"
        );
    }
    for name in readme.keys() {
        assert!(
            clock.contains_key(name),
            "README's clock table lists {name}, which template.yaml does not have"
        );
    }
}

#[test]
fn the_parsers_read_what_they_are_given() {
    let template = "Parameters:\n  Sweep:\n    Type: String\n    Default: rate(5 minutes)\n  \
                    CoolSeconds:\n    Type: Number\n    Default: 300\nResources:\n  X:\n    \
                    Default: no\n";
    let defaults = template_defaults(template);
    assert_eq!(
        defaults.get("Sweep").map(String::as_str),
        Some("rate(5 minutes)")
    );
    assert_eq!(defaults.get("CoolSeconds").map(String::as_str), Some("300"));
    assert_eq!(defaults.len(), 2, "{defaults:?}");
    let readme = "### The clock: x\n\n| parameter | default |\n|---|---|\n| `CoolSeconds` | `300` | why |\n\n## Next\n| `Other` | `1` |\n";
    let rows = readme_clock(readme);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows.get("CoolSeconds").map(String::as_str), Some("300"));
}
