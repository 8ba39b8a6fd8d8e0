//! The function code a local deploy uploads, zipped once per build instead of once per deploy.
//!
//! `sam deploy` zips every function's build folder before it uploads it
//! (`upload_local_artifacts` in samcli/lib/package/utils.py): seven folders of debug binaries,
//! about 400 MB, cost about 20 s of one core on every deploy, and every end-to-end test
//! deploys the stack. A `CodeUri` that is a zip file SAM uploads as it is. So the harness
//! zips each folder once, with SAM's own `make_zip` (the archive `sam deploy` would build,
//! permissions included), and deploys a copy of the built template whose `CodeUri` are those
//! zips. The deploy itself (upload, change set, transform) is the user's `sam deploy`.
//!
//! Tests running side by side all ask at once: the zips are made under an exclusive lock, and
//! reused while the folder they were made from is unchanged (sizes and modification times of
//! its files, kept beside each zip).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{HarnessError, Result, io};

/// The built template `built` (in `.aws-sam/build/`, made by `sam build`) with each
/// function's `CodeUri` folder replaced by a zip of it, written beside it (relative paths in
/// it stay valid) as `<name>.zipped-<pid>-<n>.yaml`; returns its path, which the caller
/// removes after the deploy. `python` is the project venv's interpreter (the one the SAM
/// CLI runs on).
pub fn zipped_template(built: &Path, python: &Path) -> Result<PathBuf> {
    let dir = built.parent().map(Path::to_path_buf).unwrap_or_default();
    let text =
        std::fs::read_to_string(built).map_err(io(format!("reading {}", built.display())))?;
    let lock_path = dir.join(".zips.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(format!("opening {}", lock_path.display())))?;
    lock.lock()
        .map_err(io(format!("locking {}", lock_path.display())))?;

    let mut rewritten = String::with_capacity(text.len());
    let mut stale = Vec::new();
    for line in text.split_inclusive('\n') {
        match code_folder(line, &dir) {
            Some((indent, folder)) => {
                let zip = dir.join(format!("{folder}.zip"));
                let stamp = folder_stamp(&dir.join(&folder))?;
                let stamp_path = dir.join(format!("{folder}.zip.stamp"));
                let current = zip.is_file()
                    && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(&stamp);
                if !current {
                    stale.push((folder.clone(), stamp, stamp_path));
                }
                rewritten.push_str(&format!("{indent}CodeUri: {folder}.zip\n"));
            }
            None => rewritten.push_str(line),
        }
    }
    if !stale.is_empty() {
        make_zips(
            &dir,
            python,
            &stale.iter().map(|(f, _, _)| f.as_str()).collect::<Vec<_>>(),
        )?;
        for (_, stamp, stamp_path) in &stale {
            std::fs::write(stamp_path, stamp)
                .map_err(io(format!("writing {}", stamp_path.display())))?;
        }
    }
    let stem = built
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "template".into());
    // One copy per process (and deploy): nothing another test reads is ever rewritten.
    static DEPLOYS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let zipped = dir.join(format!(
        "{stem}.zipped-{}-{}.yaml",
        std::process::id(),
        DEPLOYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&zipped, rewritten).map_err(io(format!("writing {}", zipped.display())))?;
    Ok(zipped)
}

/// `(indent, folder)` when `line` is `CodeUri: <folder>` naming a folder of `dir` that holds
/// a built function (its `bootstrap`); the `./` of the template's globals is not one.
fn code_folder(line: &str, dir: &Path) -> Option<(String, String)> {
    let trimmed = line.trim_end();
    let value = trimmed.trim_start().strip_prefix("CodeUri:")?.trim();
    let value = value.trim_matches(|c| c == '\'' || c == '"');
    let simple = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    (simple && dir.join(value).join("bootstrap").is_file()).then(|| {
        let indent = &trimmed[..trimmed.len() - trimmed.trim_start().len()];
        (indent.to_string(), value.to_string())
    })
}

/// Every file of `folder` with its size and modification time, one per line, sorted.
fn folder_stamp(folder: &Path) -> Result<String> {
    let mut lines = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries =
            std::fs::read_dir(&current).map_err(io(format!("reading {}", current.display())))?;
        for entry in entries {
            let entry = entry.map_err(io(format!("reading {}", current.display())))?;
            let meta = std::fs::metadata(entry.path())
                .map_err(io(format!("reading {}", entry.path().display())))?;
            if meta.is_dir() {
                pending.push(entry.path());
                continue;
            }
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            lines.push(format!(
                "{} {} {modified}",
                entry
                    .path()
                    .strip_prefix(folder)
                    .unwrap_or(&entry.path())
                    .display(),
                meta.len()
            ));
        }
    }
    lines.sort();
    Ok(lines.join("\n"))
}

/// Zip each of `folders` (of `dir`) into `<folder>.zip` with SAM's `make_zip`.
fn make_zips(dir: &Path, python: &Path, folders: &[&str]) -> Result<()> {
    const ZIP: &str = "import os, sys\n\
        from samcli.lib.package.utils import make_zip\n\
        for folder in sys.argv[1:]:\n    \
            partial = make_zip(folder + '.partial', folder)\n    \
            os.replace(partial, folder + '.zip')\n";
    let output = Command::new(python)
        .current_dir(dir)
        .args(["-c", ZIP])
        .args(folders)
        .output()
        .map_err(io(format!("running {}", python.display())))?;
    if !output.status.success() {
        return Err(HarnessError::Io {
            context: format!(
                "zipping the functions of {} with SAM's make_zip",
                dir.display()
            ),
            source: std::io::Error::other(format!(
                "{}\n(the SAM CLI pinned in requirements-tools.txt provides \
                 samcli.lib.package.utils.make_zip; run `make setup`)",
                String::from_utf8_lossy(&output.stderr)
            )),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_code_folders_of_built_functions_become_zips() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("ApiFunction")).expect("folder");
        std::fs::write(dir.path().join("ApiFunction/bootstrap"), b"binary").expect("write");
        assert_eq!(
            code_folder("      CodeUri: ApiFunction\n", dir.path()),
            Some(("      ".to_string(), "ApiFunction".to_string()))
        );
        assert_eq!(
            code_folder("    CodeUri: 'ApiFunction'\n", dir.path()),
            Some(("    ".to_string(), "ApiFunction".to_string()))
        );
        // The globals' `./`, a folder without a bootstrap, and anything else stay.
        assert_eq!(code_folder("    CodeUri: ./\n", dir.path()), None);
        assert_eq!(code_folder("    CodeUri: Missing\n", dir.path()), None);
        assert_eq!(code_folder("    Handler: bootstrap\n", dir.path()), None);
    }

    #[test]
    fn a_changed_binary_changes_the_stamp() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("bootstrap"), b"one").expect("write");
        let before = folder_stamp(dir.path()).expect("stamp");
        assert_eq!(before, folder_stamp(dir.path()).expect("stamp"));
        std::fs::write(dir.path().join("bootstrap"), b"three").expect("write");
        assert_ne!(before, folder_stamp(dir.path()).expect("stamp"));
    }
}
