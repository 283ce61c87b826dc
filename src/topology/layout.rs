//! An instance's deploy dir, as TiUP lays it out and dm-patch adds to it, named in one place:
//!
//! ```text
//! <deploy_dir>/bin/<comp>/<comp>          the binary that runs (TiUP's)
//! <deploy_dir>/bin.old.<cluster version>/ TiUP's backup of bin/, made by the first patch
//! <deploy_dir>/bin.patch-<sha7>/          a run's staging dir: tree/ (the package, verified)
//!                                          and previous/ (what the swap replaced)
//! <deploy_dir>/bin.rollback/<stamp>/      rollback points: what each patch replaced
//! ```
//!
//! The remote scripts (`crate::remote`) are given these paths, or the deploy dir and the names
//! below, never spell them otherwise.

use super::Role;

/// The directory, beside `bin/`, where what each patch replaced is kept for `dm-patch rollback`.
pub const ROLLBACK_DIR: &str = "bin.rollback";

/// Every path of one instance's deploy dir that dm-patch reads or writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployLayout {
    deploy_dir: String,
    role: Role,
}

impl DeployLayout {
    pub fn new(deploy_dir: &str, role: Role) -> DeployLayout {
        DeployLayout { deploy_dir: deploy_dir.to_owned(), role }
    }

    pub fn deploy_dir(&self) -> &str {
        &self.deploy_dir
    }

    /// `<deploy_dir>/bin`.
    pub fn bin(&self) -> String {
        format!("{}/bin", self.deploy_dir)
    }

    /// `<comp>/<comp>`: the binary, relative to `bin/` (and to every copy of it).
    pub fn entry(&self) -> String {
        let comp = self.role.component();
        format!("{comp}/{comp}")
    }

    /// `<deploy_dir>/bin/<comp>/<comp>`: the binary that runs.
    pub fn binary(&self) -> String {
        format!("{}/{}", self.bin(), self.entry())
    }

    /// TiUP's backup of `bin/`, named by the cluster's version: `bin.old.<version>`.
    pub fn backup(&self, cluster_version: &str) -> String {
        format!("{}/bin.old.{cluster_version}", self.deploy_dir)
    }

    /// The staging dir of the package whose sha256 starts with `sha7`: `bin.patch-<sha7>`.
    pub fn staging(&self, sha7: &str) -> String {
        format!("{}/bin.patch-{sha7}", self.deploy_dir)
    }

    /// Where a staging dir keeps what the swap replaced in `bin/`.
    pub fn previous(staging: &str) -> String {
        format!("{staging}/previous")
    }

    /// `<deploy_dir>/bin.rollback`: the rollback points.
    pub fn rollback_points(&self) -> String {
        format!("{}/{ROLLBACK_DIR}", self.deploy_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_inside_the_deploy_dir_as_tiup_names_it() {
        let layout = DeployLayout::new("/home/tidb/deploy/dm-worker-8262", Role::Worker);
        let deploy = layout.deploy_dir().to_owned();
        assert_eq!(layout.binary(), format!("{deploy}/bin/dm-worker/dm-worker"));
        assert_eq!(layout.backup("v8.5.1"), format!("{deploy}/bin.old.v8.5.1"));
        assert_eq!(layout.staging("1a2b3c4"), format!("{deploy}/bin.patch-1a2b3c4"));
        let staging = layout.staging("1a2b3c4");
        assert_eq!(DeployLayout::previous(&staging), format!("{staging}/previous"));
        assert_eq!(layout.rollback_points(), format!("{deploy}/bin.rollback"));
        let master = DeployLayout::new("/d", Role::Master);
        assert_eq!(master.entry(), "dm-master/dm-master");
    }
}
