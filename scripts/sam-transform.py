"""Write template.yaml as CloudFormation sees it after the SAM transform (JSON).

    python scripts/sam-transform.py template.yaml target/template/transformed.json

cfn-lint validates a SAM template against SAM's own schemas without running the transform
(cfnlint/template/transforms/transform.py merges Globals only), so the IAM policies SAM
writes from a function's `Policies` are never checked by W3037 (unknown IAM action) and the
like. `make template-lint` lints the output of this script too. The transform is the SAM
translator the SAM CLI ships (samtranslator), as `sam deploy` uses; local code locations
become S3 placeholders exactly as `sam validate` does (the state machine definition has its
own checks: tests/tests/workflow_definition.rs).
"""

import json
import sys
from pathlib import Path

import boto3
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.utils.py27hash_fix import (
    to_py27_compatible_template,
    undo_mark_unicode_str_in_template,
)
from samtranslator.yaml_helper import yaml_parse

PLACEHOLDER = "s3://bucket/value"
REGION = "us-east-1"


def local_uris_to_placeholders(template):
    globals_function = (template.get("Globals") or {}).get("Function") or {}
    if isinstance(globals_function.get("CodeUri"), str):
        globals_function["CodeUri"] = PLACEHOLDER
    for resource in (template.get("Resources") or {}).values():
        props = resource.get("Properties") or {}
        kind = resource.get("Type")
        if kind == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            props["CodeUri"] = PLACEHOLDER
        if kind == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str):
            props["DefinitionUri"] = PLACEHOLDER


def main(source, destination):
    source = Path(source)
    template = yaml_parse(source.read_text())
    local_uris_to_placeholders(template)
    parameters = {}
    to_py27_compatible_template(template, parameters)
    # A session with a region and no credentials: the template names managed policies by
    # ARN only, so the translator never calls IAM (the policy map is empty).
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    output = undo_mark_unicode_str_in_template(
        translator.translate(template, parameter_values=parameters, get_managed_policy_map=dict)
    )
    Path(destination).parent.mkdir(parents=True, exist_ok=True)
    Path(destination).write_text(json.dumps(output, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: sam-transform.py TEMPLATE OUTPUT.json")
    main(sys.argv[1], sys.argv[2])
