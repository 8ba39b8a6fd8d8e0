"""Project security checks for template.yaml, run as cfn-lint custom rules.

    cfn-lint template.yaml --append-rules scripts/cfn-rules

They read the template as written (SAM resources included), so a finding points at the
line to change. Each rule has a deliberately bad fragment under tests/security/ that the
test suite lints to prove the rule fails it (tests/tests/security_checks.rs).
"""

import re

from cfnlint.rules import CloudFormationLintRule, RuleMatch

OPEN_CIDRS = {"0.0.0.0/0", "::/0"}

# Actions that accept no resource ARN in IAM: "*" is the only possible Resource.
NO_RESOURCE_LEVEL = (
    re.compile(r"^ec2:Describe[A-Za-z]*$"),
    re.compile(r"^elasticloadbalancing:Describe[A-Za-z]*$"),
    re.compile(r"^ssm:(ListCommandInvocations|GetCommandInvocation|ListCommands|DescribeInstanceInformation)$"),
    re.compile(r"^secretsmanager:GetRandomPassword$"),
    re.compile(r"^cloudwatch:(DescribeAlarms|GetMetricData|PutMetricData)$"),
    re.compile(r"^xray:(PutTraceSegments|PutTelemetryRecords)$"),
)

# A resource ARN that names a type but no resource of it: "…:instance/*", "…:subnet/*".
TYPE_WILDCARD = re.compile(r":[a-z0-9-]+/\*$")


def _resources(cfn, *types):
    for name, resource in cfn.template.get("Resources", {}).items():
        if isinstance(resource, dict) and resource.get("Type") in types:
            yield name, resource, resource.get("Properties") or {}


def _literal(value):
    """The text of a plain string or a !Sub string; None for other intrinsics."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0] if isinstance(sub, list) and sub else None
    return None


def _as_list(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


class OpenIngress(CloudFormationLintRule):
    """A security group opens only the ALB listener ports to the whole internet."""

    id = "E9101"
    shortdesc = "Security group open to the internet beyond the ALB listener ports"
    description = (
        "0.0.0.0/0 and ::/0 may reach only the ports of the stack's ALB listeners; "
        "everything else must name a source security group or a private CIDR"
    )
    tags = ["security", "ec2"]

    def match(self, cfn):
        listener_ports = {
            str(props.get("Port"))
            for _, _, props in _resources(cfn, "AWS::ElasticLoadBalancingV2::Listener")
        }
        rules = []
        for name, _, props in _resources(cfn, "AWS::EC2::SecurityGroup"):
            for index, ingress in enumerate(_as_list(props.get("SecurityGroupIngress"))):
                rules.append((["Resources", name, "Properties", "SecurityGroupIngress", index], ingress))
        for name, _, props in _resources(cfn, "AWS::EC2::SecurityGroupIngress"):
            rules.append((["Resources", name, "Properties"], props))
        matches = []
        for path, ingress in rules:
            if not isinstance(ingress, dict):
                continue
            cidrs = {ingress.get("CidrIp"), ingress.get("CidrIpv6")} & OPEN_CIDRS
            if not cidrs:
                continue
            protocol = str(ingress.get("IpProtocol", "")).lower()
            ports = {str(ingress.get("FromPort")), str(ingress.get("ToPort"))}
            if protocol in ("tcp", "6") and len(ports) == 1 and ports <= listener_ports:
                continue
            matches.append(
                RuleMatch(
                    path,
                    f"{'/'.join(sorted(cidrs))} may reach only the ALB listener ports "
                    f"({', '.join(sorted(listener_ports)) or 'none'}); this opens "
                    f"{protocol or '?'} {'-'.join(sorted(ports))}: use a source security group",
                )
            )
        return matches


class InstanceMetadataV1(CloudFormationLintRule):
    """Instances require IMDSv2 (session tokens)."""

    id = "E9102"
    shortdesc = "Instance allows IMDSv1"
    description = "Launch templates must set MetadataOptions.HttpTokens: required"
    tags = ["security", "ec2"]

    def match(self, cfn):
        matches = []
        for name, _, props in _resources(cfn, "AWS::EC2::LaunchTemplate"):
            data = props.get("LaunchTemplateData") or {}
            tokens = (data.get("MetadataOptions") or {}).get("HttpTokens")
            if tokens != "required":
                matches.append(
                    RuleMatch(
                        ["Resources", name, "Properties", "LaunchTemplateData"],
                        f"{name} allows IMDSv1: set MetadataOptions.HttpTokens: required",
                    )
                )
        for name, _, props in _resources(cfn, "AWS::EC2::Instance"):
            if "LaunchTemplate" not in props:
                matches.append(
                    RuleMatch(
                        ["Resources", name, "Properties"],
                        f"{name} is launched without a launch template, so IMDSv2 is not "
                        "enforced: launch it from one with HttpTokens: required",
                    )
                )
        return matches


class Unencrypted(CloudFormationLintRule):
    """Volumes, the table and buckets are encrypted at rest."""

    id = "E9103"
    shortdesc = "Unencrypted volume, table or bucket"
    description = (
        "Every EBS volume (launch template block devices, AWS::EC2::Volume), the DynamoDB "
        "table and every S3 bucket must be encrypted"
    )
    tags = ["security", "encryption"]

    def match(self, cfn):
        matches = []
        for name, _, props in _resources(cfn, "AWS::EC2::LaunchTemplate"):
            data = props.get("LaunchTemplateData") or {}
            devices = _as_list(data.get("BlockDeviceMappings"))
            if not devices:
                matches.append(
                    RuleMatch(
                        ["Resources", name, "Properties", "LaunchTemplateData"],
                        f"{name} leaves the root volume as the AMI has it: add "
                        "BlockDeviceMappings with Ebs.Encrypted: true",
                    )
                )
            for index, device in enumerate(devices):
                ebs = (device or {}).get("Ebs")
                if ebs is not None and ebs.get("Encrypted") not in (True, "true"):
                    matches.append(
                        RuleMatch(
                            ["Resources", name, "Properties", "LaunchTemplateData",
                             "BlockDeviceMappings", index, "Ebs"],
                            f"{name}: volume {device.get('DeviceName', index)} is not "
                            "encrypted: set Encrypted: true",
                        )
                    )
        for name, _, props in _resources(cfn, "AWS::EC2::Volume"):
            if props.get("Encrypted") not in (True, "true"):
                matches.append(
                    RuleMatch(["Resources", name, "Properties"],
                              f"{name} is not encrypted: set Encrypted: true")
                )
        for name, _, props in _resources(cfn, "AWS::DynamoDB::Table"):
            if (props.get("SSESpecification") or {}).get("SSEEnabled") not in (True, "true"):
                matches.append(
                    RuleMatch(["Resources", name, "Properties"],
                              f"{name} is not encrypted with KMS: set SSESpecification.SSEEnabled: true")
                )
        for name, _, props in _resources(cfn, "AWS::S3::Bucket"):
            if not props.get("BucketEncryption"):
                matches.append(
                    RuleMatch(["Resources", name, "Properties"],
                              f"{name} has no BucketEncryption: add an SSE rule")
                )
        return matches


def _statements(cfn):
    """(path, statement) for every inline IAM statement the template writes."""
    for name, resource, props in _resources(
        cfn, "AWS::Serverless::Function", "AWS::Serverless::StateMachine"
    ):
        for p_index, policy in enumerate(_as_list(props.get("Policies"))):
            if isinstance(policy, dict) and "Statement" in policy:
                for s_index, statement in enumerate(_as_list(policy["Statement"])):
                    yield (["Resources", name, "Properties", "Policies", p_index,
                            "Statement", s_index], statement)
    for name, _, props in _resources(cfn, "AWS::IAM::Role"):
        for p_index, policy in enumerate(_as_list(props.get("Policies"))):
            document = (policy or {}).get("PolicyDocument") or {}
            for s_index, statement in enumerate(_as_list(document.get("Statement"))):
                yield (["Resources", name, "Properties", "Policies", p_index,
                        "PolicyDocument", "Statement", s_index], statement)
    for name, _, props in _resources(cfn, "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        document = props.get("PolicyDocument") or {}
        for s_index, statement in enumerate(_as_list(document.get("Statement"))):
            yield (["Resources", name, "Properties", "PolicyDocument", "Statement", s_index],
                   statement)


def _is_mutating_ec2_or_elb(action):
    service, _, verb = action.partition(":")
    return service in ("ec2", "elasticloadbalancing") and not re.match(
        r"^(Describe|Get|List)", verb
    )


class IamScope(CloudFormationLintRule):
    """IAM statements are scoped: tag conditions on fleet mutations, no needless "*"."""

    id = "E9104"
    shortdesc = "IAM statement not scoped"
    description = (
        "A statement granting a mutating EC2/ELBv2 action needs a condition (a tag condition) "
        "unless every resource it names is a specific one; Resource \"*\" is allowed only "
        "for actions that take no resource ARN"
    )
    tags = ["security", "iam"]

    def match(self, cfn):
        matches = []
        for path, statement in _statements(cfn):
            if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
                continue
            actions = [a for a in _as_list(statement.get("Action")) if isinstance(a, str)]
            resources = _as_list(statement.get("Resource"))
            texts = [_literal(r) for r in resources]
            star = "*" in texts
            who = statement.get("Sid") or "a statement"
            if any(a == "*" or a.endswith(":*") for a in actions):
                matches.append(RuleMatch(path, f"{who} grants every action of a service: list the actions"))
                continue
            if star:
                scopable = [a for a in actions if not any(p.match(a) for p in NO_RESOURCE_LEVEL)]
                if scopable:
                    matches.append(
                        RuleMatch(
                            path + ["Resource"],
                            f"{who} grants {', '.join(scopable)} on \"*\": name the "
                            "resources (ARNs) these actions act on",
                        )
                    )
                    continue
            mutating = [a for a in actions if _is_mutating_ec2_or_elb(a)]
            if not mutating or statement.get("Condition"):
                continue
            # !Ref / !GetAtt name one resource of the stack; "*" and "…:type/*" name any.
            broad = [t for t in texts if t is not None and (t == "*" or TYPE_WILDCARD.search(t))]
            if broad:
                matches.append(
                    RuleMatch(
                        path,
                        f"{who} grants {', '.join(mutating)} on any "
                        f"{', '.join(str(b) for b in broad)} without a condition: add a tag "
                        "condition (aws:RequestTag/…, ec2:ResourceTag/…) or name the resources",
                    )
                )
        return matches


class ApiAuthorization(CloudFormationLintRule):
    """Every API route is authorized."""

    id = "E9105"
    shortdesc = "API route without authorization"
    description = (
        "HTTP APIs need a default authorizer, function API events must not opt out with "
        "Authorizer: NONE or use the implicit (unauthorized) API, and raw routes need an "
        "AuthorizationType other than NONE"
    )
    tags = ["security", "apigateway"]

    def match(self, cfn):
        matches = []
        for name, _, props in _resources(cfn, "AWS::Serverless::HttpApi", "AWS::Serverless::Api"):
            if not (props.get("Auth") or {}).get("DefaultAuthorizer"):
                matches.append(
                    RuleMatch(["Resources", name, "Properties"],
                              f"{name} has no Auth.DefaultAuthorizer: set AWS_IAM or an authorizer")
                )
        for name, _, props in _resources(cfn, "AWS::Serverless::Function"):
            for event_name, event in (props.get("Events") or {}).items():
                if not isinstance(event, dict) or event.get("Type") not in ("HttpApi", "Api"):
                    continue
                event_props = event.get("Properties") or {}
                path = ["Resources", name, "Properties", "Events", event_name]
                if "ApiId" not in event_props and "RestApiId" not in event_props:
                    matches.append(
                        RuleMatch(path, f"{name}.{event_name} uses the implicit API, which "
                                        "has no authorizer: set ApiId to the stack's API")
                    )
                elif (event_props.get("Auth") or {}).get("Authorizer") == "NONE":
                    matches.append(
                        RuleMatch(path, f"{name}.{event_name} opts out of authorization "
                                        "(Authorizer: NONE)")
                    )
        for name, _, props in _resources(cfn, "AWS::ApiGatewayV2::Route"):
            if props.get("AuthorizationType", "NONE") == "NONE":
                matches.append(
                    RuleMatch(["Resources", name, "Properties"],
                              f"{name} has no authorization: set AuthorizationType")
                )
        return matches
