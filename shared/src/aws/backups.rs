//! S3 adapter of the stack's backup bucket (`BACKUP_BUCKET`): the scripts write backups and
//! binary logs there (layout in [`crate::domain::backup`]); the orchestrator only reads a
//! backup's manifest and deletes what retention or a purge lets go.
//!
//! Deletes are one `DeleteObject` per key, as the command-output bucket's purge does:
//! `DeleteObjects` needs a `Content-MD5` (or a checksum) header that not every S3
//! implementation accepts, and a cluster has a handful of backups and a few hundred
//! binary logs a day at most.

use crate::domain::backup::{BackupId, Manifest, backup_prefix, binlog_prefix, cluster_prefix};
use crate::error::{Error, Result, from_sdk, sdk_error_code};

/// The environment variable naming the bucket.
pub const BACKUP_BUCKET: &str = "BACKUP_BUCKET";

/// The backup bucket: manifests read, backups and binary logs deleted.
#[derive(Debug, Clone)]
pub struct BackupBucket {
    s3: aws_sdk_s3::Client,
    bucket: String,
}

/// One archived object: its key and when it was last written (epoch seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    key: String,
    modified: Option<i64>,
}

impl BackupBucket {
    /// The bucket `bucket`, reached through `s3` (the SDK or a test's mock).
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            s3,
            bucket: bucket.into(),
        }
    }

    /// The bucket named by `BACKUP_BUCKET`.
    pub fn from_env(s3: aws_sdk_s3::Client) -> Result<Self> {
        Ok(Self::new(s3, crate::config::required(BACKUP_BUCKET)?))
    }

    /// The bucket's name, as the scripts take it.
    pub fn name(&self) -> &str {
        &self.bucket
    }

    /// The manifest of `backup` of `cluster`, parsed; `None` when there is none (the
    /// script writes it last, so a backup without one does not exist). Not checked against
    /// the record here: [`Manifest::check`] does that.
    pub async fn manifest(&self, cluster: &str, backup: &BackupId) -> Result<Option<Manifest>> {
        let key = Manifest::key(cluster, backup);
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(object) => {
                let bytes = object.body.collect().await.map_err(|e| Error::Aws {
                    service: "s3",
                    operation: "GetObject",
                    code: "BodyRead".into(),
                    message: e.to_string(),
                    retryable: true,
                })?;
                Manifest::parse(&bytes.into_bytes()).map(Some)
            }
            // With s3:ListBucket granted, a missing key is 404 NoSuchKey (S3 API reference,
            // GetObject); the template grants it, so a 403 is a real denial and an error.
            Err(e) if matches!(sdk_error_code(&e), Some("NoSuchKey" | "NotFound")) => Ok(None),
            Err(e) => Err(from_sdk("s3", "GetObject", e)),
        }
    }

    /// Delete every object of one backup; returns how many.
    pub async fn delete_backup(&self, cluster: &str, backup: &BackupId) -> Result<usize> {
        let keys = self.list(&backup_prefix(cluster, backup)).await?;
        self.delete_all(keys.into_iter().map(|o| o.key)).await
    }

    /// Delete the cluster's archived binary logs last written before `before` (epoch
    /// seconds): no kept backup needs them. Returns how many.
    pub async fn delete_binlogs_before(&self, cluster: &str, before: i64) -> Result<usize> {
        let old = self
            .list(&binlog_prefix(cluster))
            .await?
            .into_iter()
            // An object without a time is left: only what is known to be old goes.
            .filter(|o| o.modified.is_some_and(|m| m < before))
            .map(|o| o.key);
        self.delete_all(old).await
    }

    /// Delete everything of the cluster in the bucket (backups and binary logs); returns
    /// how many objects.
    pub async fn purge_cluster(&self, cluster: &str) -> Result<usize> {
        let keys = self.list(&cluster_prefix(cluster)).await?;
        self.delete_all(keys.into_iter().map(|o| o.key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let mut listed = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| from_sdk("s3", "ListObjectsV2", e))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let modified = object.last_modified().map(|t| t.secs());
                listed.push(Listed {
                    key: key.to_string(),
                    modified,
                });
            }
        }
        Ok(listed)
    }

    async fn delete_all(&self, keys: impl IntoIterator<Item = String>) -> Result<usize> {
        let mut deleted = 0;
        for key in keys {
            self.s3
                .delete_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| from_sdk("s3", "DeleteObject", e))?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests;
