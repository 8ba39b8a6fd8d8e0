//! template.yaml carries the SSM documents rendered from scripts/ssm/, unchanged.

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
