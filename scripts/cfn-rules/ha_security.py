"""Project security checks for template.yaml, run as cfn-lint custom rules.

    cfn-lint template.yaml --append-rules scripts/cfn-rules

They read the template as written (SAM resources included), so a finding points at the
line to change. Each rule has a deliberately bad fragment under tests/security/ that the
test suite lints to prove the rule fails it (tests/tests/security_checks.rs).
"""

import json
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
    # Empty "Resource types" column in the Service Authorization Reference ("Actions,
    # resources, and condition keys for AWS Step Functions"): the task token is the scope.
    re.compile(r"^states:(SendTaskSuccess|SendTaskFailure|SendTaskHeartbeat)$"),
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
            cidrs = {
                c for c in (ingress.get("CidrIp"), ingress.get("CidrIpv6")) if isinstance(c, str)
            } & OPEN_CIDRS
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


class SsmDocumentUpdate(CloudFormationLintRule):
    """A named SSM document is updated in place, never replaced."""

    id = "E9106"
    shortdesc = "Named SSM document replaced on update"
    description = (
        "An AWS::SSM::Document with a Name must set UpdateMethod: NewVersion: the default "
        "(Replace) makes CloudFormation replace it when its content changes, which it "
        "refuses for a custom-named resource, so the next deploy after a script change fails"
    )
    tags = ["reliability", "ssm"]

    def match(self, cfn):
        matches = []
        for name, _, props in _resources(cfn, "AWS::SSM::Document"):
            if "Name" in props and props.get("UpdateMethod") != "NewVersion":
                matches.append(
                    RuleMatch(
                        ["Resources", name, "Properties"],
                        f"{name} has a fixed Name and UpdateMethod "
                        f"{props.get('UpdateMethod', 'Replace (the default)')}: a content change "
                        "needs a replacement, which CloudFormation refuses for a custom-named "
                        "resource; set UpdateMethod: NewVersion",
                    )
                )
        return matches


def _strings(value, path):
    """Every string inside `value` (a !Sub text counts as one), with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, path + [key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, path + [index])


LITERAL_PARTITION = re.compile(r"\barn:aws(-[a-z]+)*:")


class LiteralPartition(CloudFormationLintRule):
    """ARNs are built with ${AWS::Partition}, so the stack deploys in every partition."""

    id = "E9107"
    shortdesc = "ARN with a literal partition"
    description = (
        "An ARN written as arn:aws:... works only in the commercial partition; build it "
        "with arn:${AWS::Partition}:..."
    )
    tags = ["portability"]

    def match(self, cfn):
        matches = []
        for name, resource in (cfn.template.get("Resources") or {}).items():
            if not isinstance(resource, dict):
                continue
            for path, text in _strings(resource.get("Properties") or {},
                                       ["Resources", name, "Properties"]):
                found = LITERAL_PARTITION.search(text)
                if found:
                    matches.append(
                        RuleMatch(path, f"{name}: '{found.group(0)}' names the partition: "
                                        "use arn:${AWS::Partition}:")
                    )
        return matches


# ---------------------------------------------------------------------------- defaults
# Some checks are about the stack a user gets with the default parameters: conditions and
# Fn::If are resolved with each parameter's Default (pseudo parameters stay unknown).


def _condition_value(cfn, expression, seen=()):
    """True/False for a condition expression under the parameter defaults; None if unknown."""
    conditions = cfn.template.get("Conditions") or {}
    params = cfn.template.get("Parameters") or {}

    def value_of(node):
        if isinstance(node, (str, int, float, bool)):
            return str(node)
        if isinstance(node, dict) and "Ref" in node:
            default = (params.get(node["Ref"]) or {}).get("Default")
            return None if default is None else str(default)
        return None

    if isinstance(expression, dict) and len(expression) == 1:
        (fn, args), = expression.items()
        if fn == "Condition":
            if args in seen or args not in conditions:
                return None
            return _condition_value(cfn, conditions[args], seen + (args,))
        if fn == "Fn::Equals" and isinstance(args, list) and len(args) == 2:
            left, right = (value_of(a) for a in args)
            return None if left is None or right is None else left == right
        if fn == "Fn::Not" and isinstance(args, list) and len(args) == 1:
            inner = _condition_value(cfn, args[0], seen)
            return None if inner is None else not inner
        if fn in ("Fn::And", "Fn::Or") and isinstance(args, list):
            values = [_condition_value(cfn, a, seen) for a in args]
            if fn == "Fn::And":
                return False if False in values else (None if None in values else True)
            return True if True in values else (None if None in values else False)
    return None


def _named_condition(cfn, name):
    return _condition_value(cfn, {"Condition": name})


def _by_default(cfn, value):
    """`value` with every Fn::If resolved under the parameter defaults (unknown: kept)."""
    if isinstance(value, dict):
        if "Fn::If" in value and isinstance(value["Fn::If"], list) and len(value["Fn::If"]) == 3:
            name, then, otherwise = value["Fn::If"]
            chosen = _named_condition(cfn, name)
            if chosen is not None:
                return _by_default(cfn, then if chosen else otherwise)
        return {k: _by_default(cfn, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_by_default(cfn, v) for v in value]
    return value


def _deployed(cfn, *types):
    """(name, resource, properties) of the resources a default deploy creates."""
    for name, resource, props in _resources(cfn, *types):
        condition = resource.get("Condition")
        if condition is not None and _named_condition(cfn, condition) is False:
            continue
        yield name, resource, _by_default(cfn, props)


def _ref(value):
    return value.get("Ref") if isinstance(value, dict) else None


class ZonalEgress(CloudFormationLintRule):
    """With the default parameters, each zone's private subnet egresses in its own zone."""

    id = "E9108"
    shortdesc = "Egress of one zone depends on another zone"
    description = (
        "With the default parameters every subnet routed to a NAT gateway must route to a "
        "NAT gateway in its own zone (one route table per zone), so losing a zone cuts no "
        "other zone off from SSM, Secrets Manager and S3; and a subnet in a third zone "
        "(!Select [2, !GetAZs]) needs a Condition, since some regions offer two"
    )
    tags = ["reliability", "ec2"]

    def match(self, cfn):
        matches = []
        subnets = {name: props for name, _, props in _deployed(cfn, "AWS::EC2::Subnet")}
        nats = {name: props for name, _, props in _deployed(cfn, "AWS::EC2::NatGateway")}
        nat_of_table = {}
        for _, _, props in _deployed(cfn, "AWS::EC2::Route"):
            nat = _ref(props.get("NatGatewayId"))
            table = _ref(props.get("RouteTableId"))
            if nat and table:
                nat_of_table[table] = nat
        zones_of_table = {}
        for name, _, props in _deployed(cfn, "AWS::EC2::SubnetRouteTableAssociation"):
            table, subnet = _ref(props.get("RouteTableId")), _ref(props.get("SubnetId"))
            if table in nat_of_table and subnet in subnets:
                zone = json_key(subnets[subnet].get("AvailabilityZone"))
                zones_of_table.setdefault(table, set()).add(zone)
                nat_subnet = _ref((nats.get(nat_of_table[table]) or {}).get("SubnetId"))
                nat_zone = json_key((subnets.get(nat_subnet) or {}).get("AvailabilityZone"))
                if nat_zone != zone:
                    matches.append(
                        RuleMatch(
                            ["Resources", name],
                            f"{subnet} routes to NAT gateway {nat_of_table[table]} in another "
                            "zone: give each zone its own NAT gateway and route table",
                        )
                    )
        for table, zones in zones_of_table.items():
            if len(zones) > 1:
                matches.append(
                    RuleMatch(["Resources", table],
                              f"{table} routes subnets of {len(zones)} zones through one NAT "
                              "gateway: one route table per zone")
                )
        for name, resource, props in _resources(cfn, "AWS::EC2::Subnet"):
            zone = props.get("AvailabilityZone")
            select = zone.get("Fn::Select") if isinstance(zone, dict) else None
            if (isinstance(select, list) and select and isinstance(select[0], int)
                    and select[0] >= 2 and "Condition" not in resource):
                matches.append(
                    RuleMatch(["Resources", name],
                              f"{name} takes zone {select[0] + 1} of !GetAZs unconditionally: "
                              "regions offering two zones fail the deploy; add a Condition")
                )
        return matches


def json_key(value):
    """A hashable, comparable form of a template value."""
    import json

    return json.dumps(value, sort_keys=True, default=str)


class AuditTrail(CloudFormationLintRule):
    """Requests and data leave a trail: access logs, PITR, versioning, named invokers."""

    id = "E9109"
    shortdesc = "Missing access logs, recovery or invoker scope"
    description = (
        "ALBs log access to S3, HTTP APIs have AccessLogSettings, DynamoDB tables have "
        "point-in-time recovery, buckets are versioned or say why not "
        "(Metadata.Unversioned), and a Lambda permission for Elastic Load Balancing names "
        "its SourceArn"
    )
    tags = ["security", "audit"]

    def match(self, cfn):
        matches = []
        for name, _, props in _resources(cfn, "AWS::ElasticLoadBalancingV2::LoadBalancer"):
            attrs = {a.get("Key"): a.get("Value") for a in _as_list(props.get("LoadBalancerAttributes"))
                     if isinstance(a, dict)}
            if props.get("Type", "application") == "application" and \
                    str(attrs.get("access_logs.s3.enabled")).lower() != "true":
                matches.append(RuleMatch(["Resources", name, "Properties"],
                                         f"{name} keeps no access logs: set access_logs.s3.enabled"))
        for name, _, props in _resources(cfn, "AWS::Serverless::HttpApi", "AWS::Serverless::Api"):
            if not props.get("AccessLogSettings") and not props.get("AccessLogSetting"):
                matches.append(RuleMatch(["Resources", name, "Properties"],
                                         f"{name} keeps no access logs: set AccessLogSettings"))
        for name, _, props in _resources(cfn, "AWS::DynamoDB::Table"):
            pitr = (props.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled")
            if pitr not in (True, "true"):
                matches.append(RuleMatch(["Resources", name, "Properties"],
                                         f"{name} has no point-in-time recovery"))
        for name, resource, props in _resources(cfn, "AWS::S3::Bucket"):
            versioned = (props.get("VersioningConfiguration") or {}).get("Status") == "Enabled"
            reason = (resource.get("Metadata") or {}).get("Unversioned")
            if not versioned and not reason:
                matches.append(RuleMatch(["Resources", name],
                                         f"{name} is not versioned: enable VersioningConfiguration "
                                         "or say why in Metadata.Unversioned"))
        for name, _, props in _resources(cfn, "AWS::Lambda::Permission"):
            if props.get("Principal") == "elasticloadbalancing.amazonaws.com" and not props.get("SourceArn"):
                matches.append(RuleMatch(["Resources", name, "Properties"],
                                         f"{name} lets any target group invoke the function: "
                                         "name the target group in SourceArn"))
        return matches


class IamFitsInputs(CloudFormationLintRule):
    """Policies allow what the stack's parameters and the API accept."""

    id = "E9110"
    shortdesc = "Policy narrower than the inputs it serves"
    description = (
        "ssm:GetParameter on an ARN without an account fits only AWS's public parameters: "
        "allow the account's own form too; RunInstances on subnets is scoped by the stack's "
        "VPC (ec2:Vpc), not a list of the stack's subnets, since a cluster may name its own; "
        "a role that reads objects it may find missing (s3:GetObject) has s3:ListBucket on "
        "the bucket without an s3:prefix condition"
    )
    tags = ["iam"]

    def match(self, cfn):
        matches = []
        for path, statement in _statements(cfn):
            if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
                continue
            actions = [a for a in _as_list(statement.get("Action")) if isinstance(a, str)]
            texts = [t for t in (_literal(r) for r in _as_list(statement.get("Resource"))) if t]
            if any(a.startswith("ssm:GetParameter") for a in actions):
                public = [t for t in texts
                          if re.search(r":ssm:(\$\{AWS::Region\}|[a-z0-9-]*)::parameter", t)]
                owned = {t.replace("::parameter", ":${AWS::AccountId}:parameter") for t in public}
                missing = owned - set(texts)
                if missing:
                    matches.append(RuleMatch(path + ["Resource"],
                                             f"{statement.get('Sid', 'a statement')} allows only "
                                             "AWS's public parameter ARN form: add "
                                             + ", ".join(sorted(missing))))
            if "ec2:RunInstances" in actions:
                named = [t for t in texts if re.search(r":subnet/\$\{[A-Za-z0-9]+\}$", t)]
                if named:
                    matches.append(RuleMatch(path + ["Resource"],
                                             f"{statement.get('Sid', 'a statement')} allows "
                                             "launches only in the stack's own subnets: allow "
                                             "subnet/* with an ec2:Vpc condition"))
        matches.extend(self._listbucket_for_missing_keys(cfn))
        return matches

    @staticmethod
    def _listbucket_for_missing_keys(cfn):
        """S3 answers a GetObject of a missing key with 404 only when the caller may
        s3:ListBucket (S3 API Reference, GetObject, "Permissions"); otherwise 403. That
        check is made for the GetObject request, which carries no s3:prefix (the Service
        Authorization Reference gives s3:prefix to ListBucket alone), and AWS does not
        document that a ListBucket allowed only under an s3:prefix condition counts for it.
        An assumption, taken the safe way: such a role needs an unconditioned ListBucket."""
        roles = {}
        for path, statement in _statements(cfn):
            if isinstance(statement, dict) and statement.get("Effect") == "Allow":
                roles.setdefault(path[1], []).append((path, statement))
        matches = []
        for statements in roles.values():
            def allows(statement, action):
                return action in _as_list(statement.get("Action"))
            if not any(allows(s, "s3:GetObject") for _, s in statements):
                continue
            listing = [(p, s) for p, s in statements if allows(s, "s3:ListBucket")]
            prefixed = [(p, s) for p, s in listing
                        if "s3:prefix" in json.dumps(s.get("Condition") or {})]
            if prefixed and len(prefixed) == len(listing):
                path, statement = prefixed[0]
                matches.append(RuleMatch(path + ["Condition"],
                                         f"{statement.get('Sid', 'a statement')} allows "
                                         "s3:ListBucket only under an s3:prefix condition, "
                                         "which a GetObject of a missing key does not carry: "
                                         "S3 may answer 403 instead of 404"))
        return matches


def _refers_to(value, name):
    """Whether `value` is !Ref NAME or a !GetAtt/!Sub naming NAME."""
    if isinstance(value, dict):
        if value.get("Ref") == name:
            return True
        getatt = value.get("Fn::GetAtt")
        if isinstance(getatt, list) and getatt and getatt[0] == name:
            return True
        if isinstance(getatt, str) and getatt.split(".")[0] == name:
            return True
        sub = _literal(value)
        return sub is not None and ("${" + name + "}" in sub or "${" + name + "." in sub)
    return False


class BucketPrivateAndTls(CloudFormationLintRule):
    """Every bucket is private and reachable over TLS only."""

    id = "E9111"
    shortdesc = "Bucket public or reachable without TLS"
    description = (
        "Every S3 bucket blocks public access (all four PublicAccessBlockConfiguration "
        "settings true) and has a bucket policy that denies every request without TLS "
        "(Effect Deny, Principal *, Action s3:*, Condition Bool aws:SecureTransport false) "
        "on the bucket and its objects (S3 User Guide, 'Blocking public access' and "
        "'Enforce encryption of data in transit')"
    )
    tags = ["security", "s3"]

    BLOCKS = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")

    @staticmethod
    def _denies_plain_http(statement, bucket):
        if not isinstance(statement, dict) or statement.get("Effect") != "Deny":
            return False
        if statement.get("Principal") not in ("*", {"AWS": "*"}):
            return False
        if "s3:*" not in _as_list(statement.get("Action")):
            return False
        condition = (statement.get("Condition") or {}).get("Bool") or {}
        if str(condition.get("aws:SecureTransport")).lower() != "false":
            return False
        resources = _as_list(statement.get("Resource"))
        on_bucket = any(_refers_to(r, bucket) and not str(_literal(r) or "").endswith("/*")
                        for r in resources)
        on_objects = any(str(_literal(r) or "").endswith("/*") and _refers_to(r, bucket)
                         for r in resources)
        return on_bucket and on_objects

    def match(self, cfn):
        matches = []
        policies = list(_resources(cfn, "AWS::S3::BucketPolicy"))
        for name, _, props in _resources(cfn, "AWS::S3::Bucket"):
            block = props.get("PublicAccessBlockConfiguration") or {}
            missing = [k for k in self.BLOCKS if block.get(k) not in (True, "true")]
            if missing:
                matches.append(RuleMatch(["Resources", name, "Properties"],
                                         f"{name} does not block public access ({', '.join(missing)}): "
                                         "set all four PublicAccessBlockConfiguration settings true"))
            tls_only = any(
                _refers_to(policy.get("Bucket"), name)
                and any(self._denies_plain_http(s, name)
                        for s in _as_list((policy.get("PolicyDocument") or {}).get("Statement")))
                for _, _, policy in policies
            )
            if not tls_only:
                matches.append(RuleMatch(["Resources", name],
                                         f"{name} answers requests without TLS: add a bucket policy that "
                                         "denies s3:* on the bucket and its objects when "
                                         "aws:SecureTransport is false"))
        return matches
