//! EC2 adapter: the cluster's instances, found by tag, launched into slots, terminated.
//! SDK types stay in here; callers see [`ObservedInstance`] and [`Subnet`].

use aws_sdk_ec2::types::{
    Filter, InstanceStateName, LaunchTemplateSpecification, ResourceType, Tag, TagSpecification,
};

use crate::domain::cluster::{InstanceState, Slot};
use crate::domain::plan::{ObservedInstance, Subnet};
use crate::error::{Error, Result, from_sdk, sdk_error_code};

/// Tags every instance carries from launch: what the orchestrator owns and where it goes.
pub const TAG_CLUSTER: &str = "ha-orchestrator:cluster";
/// The slot an instance fills (`web-0`): how a retried launch finds its instance.
pub const TAG_SLOT: &str = "ha-orchestrator:slot";
const TAG_TIER: &str = "ha-orchestrator:tier";

/// What the stack gives the fleet (environment of the provision function).
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Launch template of web instances (`WEB_LAUNCH_TEMPLATE_ID`).
    pub web_launch_template: String,
    /// Launch template of database instances (`DB_LAUNCH_TEMPLATE_ID`).
    pub db_launch_template: String,
    /// SSM parameter holding the AMI id (AWS's public Amazon Linux 2023 parameter).
    pub ami_parameter: String,
    /// Where a cluster goes when its spec names no subnets (`SUBNET_IDS`).
    pub default_subnets: Vec<String>,
}

impl FleetSettings {
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        use crate::config::required_from;
        let subnets: Vec<String> = required_from("SUBNET_IDS", &lookup)?
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Self {
            web_launch_template: required_from("WEB_LAUNCH_TEMPLATE_ID", &lookup)?,
            db_launch_template: required_from("DB_LAUNCH_TEMPLATE_ID", &lookup)?,
            ami_parameter: required_from("AMI_PARAMETER", &lookup)?,
            default_subnets: subnets,
        })
    }

    /// From the provision function's environment.
    pub(crate) fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }
}

/// What EC2 made of a launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launched {
    /// The instance of this launch: new, or the one an earlier request with the same
    /// ClientToken started.
    Instance(String),
    /// EC2 refused the token: an earlier request used it with other parameters (the AMI
    /// parameter moved on between two attempts, say). The caller reserves the slot anew
    /// with a fresh token; whatever the earlier request started is found by its slot tag.
    TokenUsedWithOtherParameters,
}

/// One instance to launch.
#[derive(Debug, Clone)]
pub struct LaunchRequest<'a> {
    /// Base64 user data, if the tier has any.
    pub user_data: Option<String>,
    /// Tagged on the instance, which is how the fleet view finds it.
    pub cluster_id: &'a str,
    /// With the slot, the instance's `Name` tag (`<name>-web-0`).
    pub cluster_name: &'a str,
    /// The launch intent's ClientToken (`plan::launch_token`).
    pub client_token: &'a str,
    /// Tagged on the instance: a retried launch finds it by its slot.
    pub slot: Slot,
    /// Where the instance goes.
    pub subnet: &'a Subnet,
    /// The tier's instance type from the spec.
    pub instance_type: &'a str,
}

/// Launches, finds and terminates a cluster's instances (the provision function).
#[derive(Debug, Clone)]
pub struct Fleet {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    settings: FleetSettings,
}

impl Fleet {
    pub(crate) fn new(
        ec2: aws_sdk_ec2::Client,
        ssm: aws_sdk_ssm::Client,
        settings: FleetSettings,
    ) -> Self {
        Self { ec2, ssm, settings }
    }

    /// The subnets to spread over, in the order given, with their zones.
    pub async fn subnets(&self, requested: &[String]) -> Result<Vec<Subnet>> {
        let ids = if requested.is_empty() {
            &self.settings.default_subnets
        } else {
            requested
        };
        let output = self
            .ec2
            .describe_subnets()
            .set_subnet_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| from_sdk("ec2", "DescribeSubnets", e))?;
        let mut subnets = Vec::new();
        for id in ids {
            let found = output
                .subnets()
                .iter()
                .find(|s| s.subnet_id() == Some(id.as_str()))
                .ok_or_else(|| {
                    Error::validation(
                        "subnets",
                        format!("subnet {id} does not exist in this region"),
                        "list subnets of the stack's VPC, or omit subnets",
                    )
                })?;
            subnets.push(Subnet {
                id: id.clone(),
                availability_zone: found.availability_zone().unwrap_or_default().to_string(),
            });
        }
        Ok(subnets)
    }

    /// Every instance tagged with the cluster, in any state but long gone.
    pub async fn observe(&self, cluster_id: &str) -> Result<Vec<ObservedInstance>> {
        let mut observed = Vec::new();
        let mut pages = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{TAG_CLUSTER}"))
                    .values(cluster_id)
                    .build(),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| from_sdk("ec2", "DescribeInstances", e))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(instance_id) = instance.instance_id() else {
                    continue;
                };
                let state = instance
                    .state()
                    .and_then(|s| s.name())
                    .map(InstanceStateName::as_str)
                    .unwrap_or("pending");
                let tag = |key: &str| {
                    instance
                        .tags()
                        .iter()
                        .find(|t| t.key() == Some(key))
                        .and_then(|t| t.value())
                        .map(str::to_string)
                };
                observed.push(ObservedInstance {
                    instance_id: instance_id.to_string(),
                    slot: tag(TAG_SLOT).as_deref().and_then(Slot::parse),
                    state: InstanceState::parse(state).unwrap_or(InstanceState::Pending),
                    subnet_id: instance.subnet_id().map(str::to_string),
                    availability_zone: instance
                        .placement()
                        .and_then(|p| p.availability_zone())
                        .map(str::to_string),
                    private_dns_name: instance
                        .private_dns_name()
                        .filter(|name| !name.is_empty())
                        .map(|name| resource_host_name(instance_id, name)),
                    launched_at: instance
                        .launch_time()
                        .and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
                        .unwrap_or_default(),
                });
            }
        }
        Ok(observed)
    }

    /// The AMI to launch: read at launch time, so new nodes get the current image.
    pub async fn image_id(&self) -> Result<String> {
        let output = self
            .ssm
            .get_parameter()
            .name(&self.settings.ami_parameter)
            .send()
            .await
            .map_err(|e| match sdk_error_code(&e) {
                Some("ParameterNotFound") => Error::InvalidConfig {
                    name: "AMI_PARAMETER",
                    value: self.settings.ami_parameter.clone(),
                    reason: "no such SSM parameter in this account and region; redeploy the \
                             stack with an AmiParameter that exists"
                        .into(),
                },
                _ => from_sdk("ssm", "GetParameter", e),
            })?;
        output
            .parameter()
            .and_then(|p| p.value())
            .map(str::to_string)
            .ok_or_else(|| Error::InvalidConfig {
                name: "AMI_PARAMETER",
                value: self.settings.ami_parameter.clone(),
                reason: "the parameter has no value".into(),
            })
    }

    /// Launch one instance into its slot. Tags are part of the launch, so the instance is
    /// findable by slot from its first moment (see `plan`).
    pub async fn launch(&self, request: &LaunchRequest<'_>, image_id: &str) -> Result<Launched> {
        let template = match request.slot.tier {
            crate::domain::cluster::Tier::Web => &self.settings.web_launch_template,
            crate::domain::cluster::Tier::Db => &self.settings.db_launch_template,
        };
        let tags = vec![
            tag(
                "Name",
                &format!("{}-{}", request.cluster_name, request.slot),
            ),
            tag(TAG_CLUSTER, request.cluster_id),
            tag(TAG_SLOT, &request.slot.name()),
            tag(TAG_TIER, request.slot.tier.as_str()),
        ];
        let output = self
            .ec2
            .run_instances()
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(template)
                    .version("$Latest")
                    .build(),
            )
            .image_id(image_id)
            .instance_type(request.instance_type.into())
            .subnet_id(&request.subnet.id)
            .set_user_data(request.user_data.clone())
            .min_count(1)
            .max_count(1)
            .client_token(request.client_token)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags.clone()))
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(e) if sdk_error_code(&e) == Some("IdempotentParameterMismatch") => {
                return Ok(Launched::TokenUsedWithOtherParameters);
            }
            Err(e) => return Err(from_sdk("ec2", "RunInstances", e)),
        };
        output
            .instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(|id| Launched::Instance(id.to_string()))
            .ok_or_else(|| Error::Aws {
                service: "ec2",
                operation: "RunInstances",
                code: "NoInstance".into(),
                message: "RunInstances returned no instance".into(),
                retryable: true,
            })
    }

    /// Terminate instances; ones already gone count as terminated.
    pub async fn terminate(&self, instance_ids: &[String]) -> Result<()> {
        if instance_ids.is_empty() {
            return Ok(());
        }
        match self
            .ec2
            .terminate_instances()
            .set_instance_ids(Some(instance_ids.to_vec()))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if sdk_error_code(&e) == Some("InvalidInstanceID.NotFound") => Ok(()),
            Err(e) => Err(from_sdk("ec2", "TerminateInstances", e)),
        }
    }
}

/// The stack's VPC, against which the API checks the subnets a create asks for: the
/// instance role and the provision role may launch only into the stack's VPC, so a subnet
/// elsewhere would fail at launch with `UnauthorizedOperation`, after the cluster had been
/// accepted. Checking up front turns that into a 400 that names the subnet.
#[derive(Debug, Clone)]
pub struct StackNetwork {
    ec2: aws_sdk_ec2::Client,
    vpc_id: String,
}

impl StackNetwork {
    pub(crate) fn new(ec2: aws_sdk_ec2::Client, vpc_id: impl Into<String>) -> Self {
        Self {
            ec2,
            vpc_id: vpc_id.into(),
        }
    }

    /// `Ok` when every subnet exists and lies in the stack's VPC; a validation error naming
    /// the first that does not, and what to send instead, otherwise. One DescribeSubnets.
    pub async fn check_subnets(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let fix = || {
            format!(
                "list subnets of the stack's VPC {}, or omit subnets to use the stack's own",
                self.vpc_id
            )
        };
        let output = match self
            .ec2
            .describe_subnets()
            .set_subnet_ids(Some(ids.to_vec()))
            .send()
            .await
        {
            Ok(output) => output,
            // EC2 names the unknown subnet in its message; ours names the field.
            Err(e) if sdk_error_code(&e) == Some("InvalidSubnetID.NotFound") => {
                let message = aws_sdk_ec2::error::ProvideErrorMetadata::message(&e)
                    .unwrap_or("a subnet does not exist")
                    .to_string();
                return Err(Error::validation("subnets", message, fix()));
            }
            Err(e) => return Err(from_sdk("ec2", "DescribeSubnets", e)),
        };
        for id in ids {
            let found = output
                .subnets()
                .iter()
                .find(|s| s.subnet_id() == Some(id.as_str()));
            match found.and_then(|s| s.vpc_id()) {
                Some(vpc) if vpc == self.vpc_id => {}
                Some(vpc) => {
                    return Err(Error::validation(
                        "subnets",
                        format!("subnet {id} is in {vpc}, outside the stack's VPC"),
                        fix(),
                    ));
                }
                None => {
                    return Err(Error::validation(
                        "subnets",
                        format!("subnet {id} does not exist in this account and region"),
                        fix(),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

/// A read-only view of the stack's instances: what the sweep and the reboot's confirmation
/// need, without the launch settings a [`Fleet`] carries.
#[derive(Debug, Clone)]
pub struct Instances {
    ec2: aws_sdk_ec2::Client,
}

impl Instances {
    /// Wrap an EC2 client.
    pub fn new(ec2: aws_sdk_ec2::Client) -> Self {
        Self { ec2 }
    }

    /// See [`observe_all`].
    pub async fn observe_all(
        &self,
    ) -> Result<(std::collections::HashMap<String, InstanceState>, usize)> {
        observe_all(&self.ec2).await
    }

    /// See [`host_instance`].
    pub async fn host_instance(&self, host: &str) -> Result<HostInstance> {
        host_instance(&self.ec2, host).await
    }
}

/// The EC2 state of every instance of every cluster (tagged `ha-orchestrator:cluster`), in
/// as few calls as EC2 allows (1,000 instances a page): the sweep's view of the fleet.
/// Returns the states and how many DescribeInstances calls it took.
async fn observe_all(
    ec2: &aws_sdk_ec2::Client,
) -> Result<(std::collections::HashMap<String, InstanceState>, usize)> {
    let mut states = std::collections::HashMap::new();
    let mut calls = 0;
    let mut pages = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag-key")
                .values(TAG_CLUSTER)
                .build(),
        )
        .max_results(1000)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        calls += 1;
        let page = page.map_err(|e| from_sdk("ec2", "DescribeInstances", e))?;
        for instance in page.reservations().iter().flat_map(|r| r.instances()) {
            let (Some(id), Some(state)) = (
                instance.instance_id(),
                instance
                    .state()
                    .and_then(|s| s.name())
                    .and_then(|n| InstanceState::parse(n.as_str())),
            ) else {
                continue;
            };
            states.insert(id.to_string(), state);
        }
    }
    Ok((states, calls))
}

/// What EC2 says of the instance behind a database host name that the cluster's metadata
/// still lists but no live node has (see [`host_instance`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostInstance {
    /// No instance answers to the name, or only ones `terminated` or `shutting-down`: it
    /// can never come back and rejoin the group.
    Gone,
    /// An instance in any other state (`pending`, `running`, `stopping`, `stopped`): its
    /// mysqld may still hold or accept transactions.
    Present {
        /// The instance behind the name.
        instance_id: String,
        /// EC2's name of its state (`stopped`, ...).
        state: String,
    },
}

/// The instance id a resource-name host starts with (`i-0abc….ec2.internal` -> `i-0abc…`,
/// see [`resource_host_name`]); `None` for any other name.
fn instance_id_of_host(host: &str) -> Option<&str> {
    let label = host.split('.').next()?;
    let hex = label.strip_prefix("i-")?;
    let valid = (8..=17).contains(&hex.len())
        && hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    valid.then_some(label)
}

/// Whether EC2 confirms the instance behind `host` is gone for good: one
/// DescribeInstances with a filter (a filter, not `InstanceIds`, so an instance EC2 no
/// longer lists is an empty answer rather than `InvalidInstanceID.NotFound`).
///
/// The filter is `instance-id` when `host` is a resource name, which every node of this
/// orchestrator has: the name is derived from the instance id, so the lookup cannot miss.
/// A `private-dns-name` filter would: EC2 documents that attribute as the instance's
/// private DNS name, which with resource-name hostnames is not necessarily the name the
/// instance reports (a public note, not AWS documentation, says to filter resource names
/// on `network-interface.private-dns-name` instead:
/// gist.github.com/bpluly/687c81258534539d8114bb5f34334aa3), and fakecloud 0.51.0 matches
/// it only against `ip-….ec2.internal` (fakecloud-ec2 `service/instance.rs`, `inst_match`).
/// A miss there would read as "gone" and let a reboot force past a
/// member that still runs. Other names (a cluster that predates resource names) fall back
/// to `private-dns-name`; an IP-based name a new instance inherited then reads as
/// present, which is the safe side.
///
/// Terminated instances stay listed for about an hour, then drop out of the answer;
/// both count as gone. An EC2 error is returned as is: the caller must not read it as
/// "gone".
async fn host_instance(ec2: &aws_sdk_ec2::Client, host: &str) -> Result<HostInstance> {
    let filter = match instance_id_of_host(host) {
        Some(instance_id) => Filter::builder()
            .name("instance-id")
            .values(instance_id)
            .build(),
        None => Filter::builder()
            .name("private-dns-name")
            .values(host)
            .build(),
    };
    let mut pages = ec2
        .describe_instances()
        .filters(filter)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| from_sdk("ec2", "DescribeInstances", e))?;
        for instance in page.reservations().iter().flat_map(|r| r.instances()) {
            let state = instance.state().and_then(|s| s.name());
            // No state is no proof of termination: count it as present.
            if matches!(
                state,
                Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
            ) {
                continue;
            }
            return Ok(HostInstance::Present {
                instance_id: instance.instance_id().unwrap_or_default().to_string(),
                state: state
                    .map_or("unknown", InstanceStateName::as_str)
                    .to_string(),
            });
        }
    }
    Ok(HostInstance::Gone)
}

/// The instance's resource-name host name (`i-0abc….ec2.internal`), which the stack's
/// subnets give every instance: unlike an IP-based name (`ip-10-0-1-5.ec2.internal`) a
/// replacement never inherits it, so Group Replication never mistakes a new node for a lost
/// one. Derived from whichever private DNS name EC2 reports (an emulator may report only
/// the IP-based one). `local-cloud`'s SSM agent calls it too, so both name a node alike.
pub fn resource_host_name(instance_id: &str, private_dns_name: &str) -> String {
    match private_dns_name.split_once('.') {
        Some((_, domain)) => format!("{instance_id}.{domain}"),
        None => instance_id.to_string(),
    }
}

#[cfg(test)]
mod host_name_tests {
    use super::resource_host_name;

    #[test]
    fn host_names_are_the_instances_resource_names() {
        assert_eq!(
            resource_host_name("i-0abc", "ip-10-0-1-5.ec2.internal"),
            "i-0abc.ec2.internal"
        );
        assert_eq!(
            resource_host_name("i-0abc", "i-0abc.eu-west-1.compute.internal"),
            "i-0abc.eu-west-1.compute.internal"
        );
        assert_eq!(resource_host_name("i-0abc", "localhost"), "i-0abc");
    }
}
