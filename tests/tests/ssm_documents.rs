//! template.yaml carries the SSM documents rendered from scripts/ssm/, unchanged, and a redeploy
//! with a changed script updates them in place.

use local_cloud::documents;

#[test]
fn the_template_documents_match_the_scripts() {
    let root = local_cloud::project_root();
    let template = std::fs::read_to_string(root.join("template.yaml")).expect("template.yaml");
    let expected = documents::render(&root).expect("scripts/ssm readable");
    let current =
        documents::current_block(&template).expect("template.yaml has the generated block");
    assert!(
        current == expected,
        "template.yaml's SSM documents differ from scripts/ssm/: run `make documents`"
    );
}

#[test]
fn every_document_parameter_is_pattern_checked_and_no_secret_value_is_a_parameter() {
    let root = local_cloud::project_root();
    let block = documents::render(&root).expect("render");
    let declared = block.matches("            type: String").count();
    let patterned = block.matches("            allowedPattern: \"^").count();
    assert!(declared > 0);
    assert_eq!(
        declared, patterned,
        "a document parameter without allowedPattern"
    );
    let lower = block.to_lowercase();
    assert!(
        !lower.contains("password:"),
        "a document takes a password parameter"
    );
    // Parameters reach bash single-quoted; the patterns admit no quote to break out.
    for line in block.lines().filter(|l| l.contains("allowedPattern")) {
        let pattern = line.trim().trim_start_matches("allowedPattern: ");
        assert!(
            !pattern.contains('\'') && !pattern.contains(' '),
            "{pattern}"
        );
    }
}

/// A copy of the built template beside it (its code locations are relative to
/// `.aws-sam/build`), with one line of DbReport's script changed, and, when `drop_update_method`
/// is set, DbReport's `UpdateMethod` removed (the template as it was before the fix).
/// Removed when dropped.
struct ChangedTemplate(std::path::PathBuf);

impl ChangedTemplate {
    fn new(
        root: &std::path::Path,
        old_line: &str,
        new_line: &str,
        drop_update_method: bool,
    ) -> Self {
        const EDIT: &str = "import sys\n\
            from samcli.yamlhelper import yaml_parse, yaml_dump\n\
            source, target, old, new, drop = sys.argv[1:6]\n\
            t = yaml_parse(open(source).read())\n\
            doc = t['Resources']['DbReportDocument']['Properties']\n\
            step = doc['Content']['mainSteps'][0]['inputs']\n\
            assert old in step['runCommand'][0], 'line not found in DbReport'\n\
            step['runCommand'][0] = step['runCommand'][0].replace(old, new, 1)\n\
            if drop == 'yes':\n    doc.pop('UpdateMethod', None)\n\
            open(target, 'w').write(yaml_dump(t))\n";
        let built = root.join(".aws-sam/build/template.yaml");
        let copy = root.join(format!(
            ".aws-sam/build/template-redeploy-{}-{}.yaml",
            std::process::id(),
            drop_update_method
        ));
        let output = std::process::Command::new(root.join(".venv/bin/python"))
            .args(["-c", EDIT])
            .arg(&built)
            .arg(&copy)
            .args([
                old_line,
                new_line,
                if drop_update_method { "yes" } else { "no" },
            ])
            .output()
            .expect("run the venv's python");
        assert!(
            output.status.success(),
            "edit {}: {}",
            built.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Self(copy)
    }
}

impl Drop for ChangedTemplate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A second `sam deploy` with one line of a script under scripts/ssm changed updates the
/// stack, and the document then holds the new line. fakecloud's CloudFormation creates no
/// SSM documents (see `documents::apply_stack_documents`, which plays CloudFormation's
/// document handler after each deploy), so the stack update alone would pass with any
/// UpdateMethod: the second half shows the same redeploy refused, as on AWS, for the
/// template without `UpdateMethod: NewVersion` (E9106 in `make template-lint` catches it
/// statically).
#[tokio::test]
async fn a_redeploy_with_a_changed_script_updates_the_document() {
    let root = local_cloud::project_root();
    let stack_name = "docs";
    let (cloud, first) = e2e_tests::deployed(stack_name).await;
    assert_eq!(first.status, "CREATE_COMPLETE");
    let ssm = aws_sdk_ssm::Client::new(&cloud.sdk_config().await);
    let built = root.join(".aws-sam/build/template.yaml");
    let created = documents::apply_stack_documents(&ssm, &root, stack_name, None, &built)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        created.contains(&documents::DocumentChange::Created(format!(
            "{stack_name}-DbReport"
        ))),
        "{created:?}"
    );

    let old_line = "# Report this database node's view as one JSON line on stdout";
    let new_line = "# Report this database node's view (redeployed) as one JSON line on stdout";
    let changed = ChangedTemplate::new(&root, old_line, new_line, false);
    let second = cloud
        .deploy_template(stack_name, &changed.0, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.status, "UPDATE_COMPLETE");
    let updated =
        documents::apply_stack_documents(&ssm, &root, stack_name, Some(&built), &changed.0)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        updated,
        vec![documents::DocumentChange::NewVersion(
            format!("{stack_name}-DbReport"),
            "2".into()
        )]
    );
    let document = ssm
        .get_document()
        .name(format!("{stack_name}-DbReport"))
        .send()
        .await
        .expect("GetDocument");
    assert_eq!(document.document_version(), Some("2"));
    let content = document.content().unwrap_or_default();
    assert!(content.contains(new_line), "{content}");
    assert!(!content.contains(old_line), "{content}");

    // The template before the fix: the same change needs a replacement of a named
    // document, which CloudFormation refuses.
    let unfixed = ChangedTemplate::new(&root, old_line, new_line, true);
    let refused =
        documents::apply_stack_documents(&ssm, &root, stack_name, Some(&built), &unfixed.0)
            .await
            .expect_err("a named document with UpdateMethod Replace cannot change content");
    assert!(
        refused.contains("custom-named resource requires replacing"),
        "{refused}"
    );
}
