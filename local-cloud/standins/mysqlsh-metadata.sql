-- The InnoDB Cluster metadata schema, model 2.4.0 (what MySQL Shell 9.6+ installs), as far as its readers need it: the scripts
-- (`SELECT cluster_name FROM mysql_innodb_cluster_metadata.clusters`), MySQL Router's bootstrap
-- and metadata cache (router/src/router/src/cluster_metadata.cc and
-- router/src/metadata_cache/src/cluster_metadata_gr.cc in mysql-server read the v2_* views,
-- schema_version, and insert into v2_routers) and this stand-in.
-- Contract: mysql-shell modules/adminapi/common/metadata/metadata-model-2.4.0.sql (branch 9.6, the
-- newest public tree; 2.3.0 added routing_guidelines, 2.4.0 router_stats) defines the
-- tables and the public interface (the v2_* views, "No existing columns will have their types
-- changed or removed"). The names, column names and types below follow it; written here from
-- reading it, not copied: comments, the ClusterSet/Routing-option stored procedures (Shell-only
-- helpers nobody outside the Shell calls) and the async/ReplicaSet views beyond what Router may
-- query are left out. ASSUMPTION: Router 9.7 needs nothing else from the schema (checked by a
-- real `mysqlrouter --bootstrap` against it; see the header of `mysqlsh`).
CREATE DATABASE IF NOT EXISTS mysql_innodb_cluster_metadata DEFAULT CHARACTER SET utf8mb4;
USE mysql_innodb_cluster_metadata;
SET names utf8mb4;

-- Router refuses a major other than 2 and a minor below the one it requires
-- (cluster_metadata.cc metadata_schema_version_is_compatible); Shell 9.6 writes 2.4.0. Router
-- 9.7 reads routing guidelines only from 2.3.0 on ("Could not fetch routing guidelines:
-- metadata schema version not supported" with 2.2.0).
DROP VIEW IF EXISTS schema_version;
CREATE SQL SECURITY INVOKER VIEW schema_version (major, minor, patch) AS SELECT 2, 4, 0;

CREATE TABLE IF NOT EXISTS clustersets (
  clusterset_id VARCHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci,
  domain_name VARCHAR(63) NOT NULL,
  options JSON, attributes JSON, router_options JSON,
  topology_type ENUM('SINGLE-PRIMARY-STAR'),
  PRIMARY KEY (clusterset_id)
) CHARSET = utf8mb4, ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS clusters (
  cluster_id CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci,
  cluster_name VARCHAR(63) NOT NULL,
  description TEXT,
  options JSON,
  -- {"group_replication_group_name": ..., "default": true, ...} (create_cluster.cc)
  attributes JSON,
  cluster_type ENUM('gr', 'ar') NOT NULL,
  primary_mode ENUM('pm', 'mm') NOT NULL DEFAULT 'pm',
  router_options JSON,
  clusterset_id VARCHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci DEFAULT NULL,
  PRIMARY KEY (cluster_id),
  UNIQUE KEY (cluster_name)
) CHARSET = utf8mb4, ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS instances (
  instance_id INT UNSIGNED AUTO_INCREMENT,
  cluster_id CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  -- host:port from @@report_host (or @@hostname) and @@port
  address VARCHAR(265) CHARACTER SET ascii COLLATE ascii_general_ci,
  mysql_server_uuid CHAR(36) NOT NULL,
  instance_name VARCHAR(265) NOT NULL,
  -- {"mysqlClassic": "h:3306", "mysqlX": "h:33060", "grLocal": "h:3306"}
  addresses JSON NOT NULL,
  attributes JSON,
  description TEXT,
  instance_type ENUM('group-member', 'async-member', 'read-replica') NOT NULL,
  PRIMARY KEY (instance_id, cluster_id),
  FOREIGN KEY (cluster_id) REFERENCES clusters (cluster_id)
) CHARSET = utf8mb4, ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS async_cluster_views (
  cluster_id CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  view_id INT UNSIGNED NOT NULL,
  topology_type ENUM('SINGLE-PRIMARY-TREE'),
  view_change_reason VARCHAR(32) NOT NULL,
  view_change_time TIMESTAMP(6) NOT NULL,
  view_change_info JSON NOT NULL,
  attributes JSON NOT NULL,
  PRIMARY KEY (cluster_id, view_id), INDEX (view_id),
  FOREIGN KEY (cluster_id) REFERENCES clusters (cluster_id)
) CHARSET = utf8mb4, ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS async_cluster_members (
  cluster_id CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  view_id INT UNSIGNED NOT NULL,
  instance_id INT UNSIGNED NOT NULL,
  master_instance_id INT UNSIGNED,
  primary_master BOOL NOT NULL,
  attributes JSON NOT NULL,
  PRIMARY KEY (cluster_id, view_id, instance_id), INDEX (view_id), INDEX (instance_id),
  FOREIGN KEY (cluster_id, view_id) REFERENCES async_cluster_views (cluster_id, view_id)
) CHARSET = utf8mb4, ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS clusterset_views (
  clusterset_id VARCHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  view_id BIGINT UNSIGNED NOT NULL,
  topology_type ENUM('SINGLE-PRIMARY-TREE'),
  view_change_reason VARCHAR(32) NOT NULL,
  view_change_time TIMESTAMP(6) NOT NULL,
  view_change_info JSON NOT NULL,
  attributes JSON NOT NULL,
  PRIMARY KEY (clusterset_id, view_id), INDEX (view_id),
  FOREIGN KEY (clusterset_id) REFERENCES clustersets (clusterset_id)
) CHARSET = utf8mb4, ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS clusterset_members (
  clusterset_id VARCHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  view_id BIGINT UNSIGNED NOT NULL,
  cluster_id VARCHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  master_cluster_id VARCHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci,
  primary_cluster BOOL NOT NULL,
  attributes JSON NOT NULL,
  PRIMARY KEY (clusterset_id, view_id, cluster_id), INDEX (view_id), INDEX (cluster_id),
  FOREIGN KEY (clusterset_id, view_id) REFERENCES clusterset_views (clusterset_id, view_id)
) CHARSET = utf8mb4, ROW_FORMAT = DYNAMIC;

-- Router registers itself here at bootstrap (INSERT INTO v2_routers) and checks in at runtime.
CREATE TABLE IF NOT EXISTS routers (
  router_id INT UNSIGNED PRIMARY KEY AUTO_INCREMENT,
  router_name VARCHAR(265) NOT NULL,
  product_name VARCHAR(128) NOT NULL,
  address VARCHAR(256) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  version VARCHAR(12) DEFAULT NULL,
  last_check_in TIMESTAMP NULL DEFAULT NULL,
  attributes JSON,
  cluster_id CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci DEFAULT NULL,
  options JSON DEFAULT NULL,
  clusterset_id VARCHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci DEFAULT NULL,
  UNIQUE KEY (address, router_name)
) CHARSET = utf8mb4, ROW_FORMAT = DYNAMIC;

-- Per-router statistics Router updates often (2.4.0; router_id as in routers, no foreign key).
CREATE TABLE IF NOT EXISTS router_stats (
  router_id INT UNSIGNED NOT NULL,
  last_check_in TIMESTAMP NULL DEFAULT NULL,
  PRIMARY KEY (router_id)
) CHARSET = utf8mb4, ROW_FORMAT = DYNAMIC;

-- Routing guidelines (2.3.0): none are created here; Router then routes by its defaults.
CREATE TABLE IF NOT EXISTS routing_guidelines (
  guideline_id VARCHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci PRIMARY KEY,
  name VARCHAR(63) NOT NULL,
  guideline JSON,
  clusterset_id VARCHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci,
  cluster_id VARCHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci,
  last_update TIMESTAMP,
  default_guideline BOOL NOT NULL,
  FOREIGN KEY (clusterset_id) REFERENCES clustersets (clusterset_id),
  FOREIGN KEY (cluster_id) REFERENCES clusters (cluster_id),
  UNIQUE KEY (name)
) CHARSET = utf8mb4, ROW_FORMAT = DYNAMIC;

CREATE TABLE IF NOT EXISTS router_rest_accounts (
  cluster_id CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  user VARCHAR(256) NOT NULL,
  authentication_method VARCHAR(64) NOT NULL DEFAULT 'modular_crypt_format',
  authentication_string TEXT CHARACTER SET ascii COLLATE ascii_general_ci DEFAULT NULL,
  description VARCHAR(255) DEFAULT NULL,
  privileges JSON,
  attributes JSON DEFAULT NULL,
  PRIMARY KEY (cluster_id, user)
) CHARSET = utf8mb4, ROW_FORMAT = DYNAMIC;

-- The public interface (v2_*), the only objects Router is meant to read.
DROP VIEW IF EXISTS v2_clusters;
CREATE SQL SECURITY INVOKER VIEW v2_clusters AS
  SELECT c.cluster_type, c.primary_mode, c.cluster_id, c.cluster_name, c.router_options
  FROM clusters c;

DROP VIEW IF EXISTS v2_gr_clusters;
CREATE SQL SECURITY INVOKER VIEW v2_gr_clusters AS
  SELECT c.cluster_type, c.primary_mode, c.cluster_id AS cluster_id,
         c.cluster_name AS cluster_name,
         c.attributes->>'$.group_replication_group_name' AS group_name,
         c.attributes, c.options, c.router_options, c.description AS description,
         c.clusterset_id
  FROM clusters c WHERE c.cluster_type = 'gr';

DROP VIEW IF EXISTS v2_instances;
CREATE SQL SECURITY INVOKER VIEW v2_instances AS
  SELECT i.instance_id, i.cluster_id, i.instance_name AS label, i.mysql_server_uuid, i.address,
         i.addresses->>'$.mysqlClassic' AS endpoint, i.addresses->>'$.mysqlX' AS xendpoint,
         JSON_INSERT(i.attributes, '$.instance_type', i.instance_type) AS attributes,
         i.instance_type
  FROM instances i;

DROP VIEW IF EXISTS v2_ar_clusters;
CREATE SQL SECURITY INVOKER VIEW v2_ar_clusters AS
  SELECT v.view_id, c.cluster_type, c.primary_mode, v.topology_type AS async_topology_type,
         c.cluster_id, c.cluster_name, c.attributes, c.options, c.router_options,
         c.description, c.clusterset_id
  FROM clusters c JOIN async_cluster_views v ON c.cluster_id = v.cluster_id
  WHERE v.view_id = (SELECT MAX(view_id) FROM async_cluster_views WHERE c.cluster_id = cluster_id)
    AND c.cluster_type = 'ar';

DROP VIEW IF EXISTS v2_ar_members;
CREATE SQL SECURITY INVOKER VIEW v2_ar_members AS
  SELECT m.view_id, i.cluster_id, i.instance_id, i.instance_name AS label,
         i.mysql_server_uuid AS member_id,
         IF(m.primary_master, 'PRIMARY', 'SECONDARY') AS member_role,
         m.master_instance_id AS master_instance_id, mi.mysql_server_uuid AS master_member_id
  FROM instances i
  LEFT JOIN async_cluster_members m ON m.cluster_id = i.cluster_id AND m.instance_id = i.instance_id
  LEFT JOIN instances mi ON mi.instance_id = m.master_instance_id
  WHERE m.view_id = (SELECT MAX(view_id) FROM async_cluster_views WHERE i.cluster_id = cluster_id);

DROP VIEW IF EXISTS v2_cs_clustersets;
CREATE SQL SECURITY INVOKER VIEW v2_cs_clustersets AS
  SELECT v.view_id, v.topology_type AS async_topology_type, c.clusterset_id, c.domain_name,
         c.attributes, c.options, c.router_options
  FROM clustersets c JOIN clusterset_views v ON c.clusterset_id = v.clusterset_id
  WHERE v.view_id = (SELECT MAX(view_id) FROM clusterset_views WHERE c.clusterset_id = clusterset_id);

DROP VIEW IF EXISTS v2_cs_members;
CREATE SQL SECURITY INVOKER VIEW v2_cs_members AS
  SELECT (SELECT MAX(v.view_id) FROM clusterset_views v WHERE c.clusterset_id = v.clusterset_id) view_id,
         c.clusterset_id, c.cluster_id, c.cluster_name,
         IF(m.primary_cluster, 'PRIMARY', IF(m.primary_cluster IS NULL, NULL, 'REPLICA')) AS member_role,
         m.master_cluster_id, (m.view_id IS NULL) AS invalidated
  FROM clusters c
  LEFT JOIN clusterset_members m ON m.clusterset_id = c.clusterset_id AND m.cluster_id = c.cluster_id
    AND m.view_id = (SELECT MAX(m2.view_id) FROM clusterset_members m2 WHERE m2.clusterset_id = c.clusterset_id)
  WHERE c.clusterset_id IS NOT NULL;

-- The cluster of the server being queried (Router's bootstrap asks it of its target).
DROP VIEW IF EXISTS v2_this_instance;
CREATE SQL SECURITY INVOKER VIEW v2_this_instance AS
  SELECT i.cluster_id, i.instance_id, i.instance_type, c.cluster_name, c.cluster_type
  FROM v2_instances i JOIN clusters c ON i.cluster_id = c.cluster_id
  WHERE i.mysql_server_uuid = (SELECT CONVERT(variable_value USING utf8mb4) COLLATE utf8mb4_general_ci
      FROM performance_schema.global_variables WHERE variable_name = 'server_uuid');

DROP VIEW IF EXISTS v2_routers;
CREATE SQL SECURITY INVOKER VIEW v2_routers AS
  SELECT r.router_id, r.cluster_id, r.router_name, r.product_name, r.address, r.version,
         r.last_check_in, r.attributes, r.options, r.clusterset_id
  FROM routers r;

DROP VIEW IF EXISTS v2_router_rest_accounts;
CREATE SQL SECURITY INVOKER VIEW v2_router_rest_accounts AS
  SELECT a.cluster_id, a.user, a.authentication_method, a.authentication_string,
         a.description, a.privileges, a.attributes
  FROM router_rest_accounts a;

-- Router options per router: router's own over the cluster's over the ClusterSet's.
DROP VIEW IF EXISTS v2_cs_router_options;
CREATE SQL SECURITY INVOKER VIEW v2_cs_router_options AS
  SELECT r.router_id, CONCAT(r.address, '::', r.router_name) AS router_label, r.clusterset_id,
         JSON_MERGE_PATCH((SELECT COALESCE(router_options, '{}')
                           FROM mysql_innodb_cluster_metadata.clustersets
                           WHERE clusterset_id = r.clusterset_id),
                          COALESCE(r.options, '{}')) AS router_options
  FROM mysql_innodb_cluster_metadata.routers r;

DROP VIEW IF EXISTS v2_router_options;
CREATE SQL SECURITY INVOKER VIEW v2_router_options AS
  SELECT r.router_id, CONCAT(r.address, '::', r.router_name) AS router_label, r.cluster_id,
         r.clusterset_id,
         JSON_MERGE_PATCH(
           (SELECT COALESCE((SELECT router_options FROM mysql_innodb_cluster_metadata.clustersets
                             WHERE clusterset_id = r.clusterset_id), '{}')),
           (SELECT COALESCE((SELECT router_options FROM mysql_innodb_cluster_metadata.clusters
                             WHERE cluster_id = r.cluster_id), '{}')),
           COALESCE(r.options, '{}')) AS router_options
  FROM mysql_innodb_cluster_metadata.routers r;
