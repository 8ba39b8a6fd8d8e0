//! Whether a reboot from complete outage may pass `force`: only once EC2 confirms every
//! member the metadata still lists, and no live node is, gone for good.

use crate::aws::fleet::{HostInstance, Instances};
use crate::domain::report::NodeReport;

/// Whether the reboot from complete outage seeded on the node that reported `seed` may
/// pass `force`: only when the seed's metadata lists members that are no live node and
/// EC2 confirms every one of them gone for good ([`Instances::host_instance`]).
///
/// What `force` does there (mysql-shell 9.x, modules/adminapi/dba/
/// reboot_cluster_from_complete_outage.cc, `Reboot_cluster_from_complete_outage::do_run`):
/// every instance of the metadata the Shell cannot connect to is "unreachable", and with
/// any, it warns that they "cannot be rejoined nor ensured to be OFFLINE" and, without
/// `force`, throws "Could not determine if Cluster is completely OFFLINE". A member whose
/// instance was replaced stays in the metadata, so without `force` such a cluster never
/// reboots. `force` also skips the GTID compatibility check of the reachable members
/// against the seed (same function, "If you wish to proceed, the 'force' option must be
/// explicitly set"), ignores a metadata instance that answers as a standalone server
/// (`retrieve_instances`), and lets `primary` pick a seed with fewer transactions
/// (`pick_best_instance_gtid`; not used here: the seed is the most complete node).
///
/// The risk `force` accepts is that an unreachable member still runs and writes: a
/// second group. So anything short of EC2's confirmation (an instance still listed in
/// another state than terminated or shutting-down, or an EC2 error) means no `force`: the
/// Shell then refuses while that member is unreachable, and the workflow waits and tries
/// again. Every live node has reported itself out of any group before a reboot is decided
/// (`decide`), and only members that are no live node are checked here.
pub async fn reboot_force(instances: &Instances, seed: &NodeReport, live_hosts: &[&str]) -> bool {
    let absent = seed.absent_members(live_hosts);
    if absent.is_empty() {
        return false;
    }
    for host in &absent {
        match instances.host_instance(host).await {
            Ok(HostInstance::Gone) => {}
            Ok(HostInstance::Present { instance_id, state }) => {
                tracing::info!(%host, %instance_id, %state, "a member of the metadata still has an instance; rebooting without force");
                return false;
            }
            Err(error) => {
                tracing::warn!(%host, %error, "EC2 could not confirm a member of the metadata gone; rebooting without force");
                return false;
            }
        }
    }
    tracing::info!(
        ?absent,
        "EC2 confirms every absent member of the metadata gone; rebooting with force"
    );
    true
}
