/// What `adworker migrate` does about Citus after the versioned migrations, before TimescaleDB, on
/// every run: a database that gets Citus (and worker nodes) later is converted then, keeping its
/// rows. Decided from what the server says of itself (``Facts``), so it is the same on every run
/// until that changes.
///
/// Citus and TimescaleDB cannot share a table, so the tables use one of them, never half of each:
/// tables that are hypertables already stay hypertables (distributing them would mean moving every
/// row into new tables by hand); otherwise Citus with worker nodes wins, since a server that has
/// them was set up to spread writes past one node, which hypertables on the coordinator would not.
public enum CitusSetup: Equatable, Sendable {
    /// The server has no Citus: nothing to do or say.
    case notInstalled
    /// The tables stay on this node; the message says why and what would change it.
    case stayLocal(String)
    /// Citus is preloaded and not yet created in this database: create it, then decide again.
    case createExtension
    /// The tables are (or are to become) distributed: those listed are not yet.
    case distribute([String])

    /// The column rows are distributed by. A request's training and inference rows land on the
    /// same node (joins by request id stay on one node), and request ids are unique per request,
    /// so rows spread evenly; the primary key takes it on, after the entry's own key.
    public static let distributionColumn = "request_id"

    public struct Facts: Equatable, Sendable {
        /// The server has the extension's files (`pg_available_extensions`).
        public var available: Bool
        /// `shared_preload_libraries` names it: Citus refuses to be created otherwise.
        public var preloaded: Bool
        /// This database has it (`pg_extension`).
        public var installed: Bool
        /// Active primary worker nodes (`pg_dist_node`, the coordinator not counted).
        public var workerNodes: Int
        /// Which of the tables are distributed already.
        public var distributed: Set<String>
        /// Which of the tables are TimescaleDB hypertables.
        public var hypertables: Set<String>

        public init(available: Bool, preloaded: Bool, installed: Bool, workerNodes: Int, distributed: Set<String>, hypertables: Set<String>) {
            self.available = available
            self.preloaded = preloaded
            self.installed = installed
            self.workerNodes = workerNodes
            self.distributed = distributed
            self.hypertables = hypertables
        }
    }

    public static func decide(_ facts: Facts, tables: [String]) -> CitusSetup {
        guard facts.available || facts.installed else { return .notInstalled }
        guard facts.preloaded else {
            return .stayLocal(
                "Citus: installed on this server but not preloaded, so tables stay on this node: put citus first in shared_preload_libraries (ALTER SYSTEM SET shared_preload_libraries = 'citus'), restart PostgreSQL, then run adworker migrate again"
            )
        }
        guard facts.installed else { return .createExtension }
        if !facts.distributed.isEmpty {
            return .distribute(tables.filter { !facts.distributed.contains($0) })
        }
        if !facts.hypertables.isEmpty {
            return .stayLocal(
                "Citus: not used, the tables are TimescaleDB hypertables (\(tables.filter(facts.hypertables.contains).joined(separator: ", "))), which Citus cannot distribute; they stay hypertables on this node"
            )
        }
        guard facts.workerNodes > 0 else {
            return .stayLocal(
                "Citus: no worker nodes registered, so tables stay on this node: add them on the coordinator (SELECT citus_add_node('host', 5432)), then run adworker migrate again to distribute both tables (their rows are kept)"
            )
        }
        return .distribute(tables)
    }
}

extension CitusSetup {
    /// Active primary worker nodes, the coordinator not counted (only where Citus is installed).
    public static let workerNodesQuery = "SELECT count(*) FROM pg_dist_node WHERE isactive AND noderole = 'primary' AND groupid <> 0"

    /// Partitions are created this far ahead, by every `migrate` and every upkeep run.
    public static let partitionsAhead = 14
    /// A table converted with rows gets daily partitions back to its oldest row, but no further
    /// back than this many days: older rows (an entry id with an explicit, ancient time) go to the
    /// default partition instead of thousands of near-empty partitions.
    public static let partitionsBackAtMost = 60

    /// Converts `table` (one of ours, so no quoting is needed) in one transaction, rows kept: the
    /// plain table is set aside, a partitioned table like it (daily range partitions on
    /// `enqueued_at`, and a default partition, so no row ever lacks a partition) is distributed
    /// on ``distributionColumn``, co-located with the other table (Citus's default co-location for
    /// the same column type and shard count), the rows are moved over, and the views that read
    /// the table, its owner and its grants are carried over.
    public static func conversion(of table: String) -> String {
        """
        DO $adworker$
        DECLARE
            old_table regclass := '\(table)'::regclass;
            views text[];
            view_sql text[];
            grants text[];
            owner_name text;
            oldest timestamptz;
            statement text;
        BEGIN
            SET LOCAL statement_timeout = 0;
            LOCK TABLE \(table) IN ACCESS EXCLUSIVE MODE;
            -- A view depends on the table once per column it reads: one row per view first.
            SELECT array_agg(view_oid::regclass::text), array_agg(pg_get_viewdef(view_oid))
              INTO views, view_sql
              FROM (SELECT DISTINCT pg_rewrite.ev_class AS view_oid
                      FROM pg_depend JOIN pg_rewrite ON pg_rewrite.oid = pg_depend.objid
                     WHERE pg_depend.refobjid = old_table AND pg_rewrite.ev_class <> old_table) AS dependent;
            SELECT relowner::regrole::text INTO owner_name FROM pg_class WHERE oid = old_table;
            SELECT array_agg(format('GRANT %s ON \(table) TO %s%s', privilege_type,
                                    CASE grantee WHEN 0 THEN 'PUBLIC' ELSE grantee::regrole::text END,
                                    CASE WHEN is_grantable THEN ' WITH GRANT OPTION' ELSE '' END))
              INTO grants
              FROM pg_class, aclexplode(relacl)
             WHERE pg_class.oid = old_table AND grantee <> relowner;
            SELECT min(enqueued_at) INTO oldest FROM \(table);
            ALTER TABLE \(table) RENAME TO \(table)_before_citus;
            ALTER TABLE \(table)_before_citus RENAME CONSTRAINT \(table)_pkey TO \(table)_before_citus_pkey;
            ALTER INDEX \(table)_model_time RENAME TO \(table)_before_citus_model_time;
            CREATE TABLE \(table) (LIKE \(table)_before_citus INCLUDING DEFAULTS) PARTITION BY RANGE (enqueued_at);
            ALTER TABLE \(table) ADD PRIMARY KEY (enqueued_at, stream_id, shard, \(distributionColumn));
            CREATE INDEX \(table)_model_time ON \(table) (model_name, event_time);
            CREATE TABLE \(table)_default PARTITION OF \(table) DEFAULT;
            EXECUTE format('ALTER TABLE \(table) OWNER TO %s', owner_name);
            FOREACH statement IN ARRAY coalesce(grants, ARRAY[]::text[]) LOOP
                EXECUTE statement;
            END LOOP;
            PERFORM create_distributed_table('\(table)', '\(distributionColumn)');
            PERFORM create_time_partitions('\(table)', INTERVAL '1 day', now() + make_interval(days => \(partitionsAhead)),
                greatest(least(oldest, now()), now() - make_interval(days => \(partitionsBackAtMost))));
            INSERT INTO \(table) SELECT * FROM \(table)_before_citus;
            FOR i IN 1 .. coalesce(array_length(views, 1), 0) LOOP
                EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', views[i], view_sql[i]);
            END LOOP;
            DROP TABLE \(table)_before_citus;
        END
        $adworker$
        """
    }

    /// `CALL adworker_partition_upkeep(retain_days, compress_after_days)`, run by every `migrate`
    /// and, where pg_cron is in the database, by pg_cron every hour: partitions for the next
    /// ``partitionsAhead`` days; rows the default partition holds move to the partitions made for
    /// them (the default partition is swapped for an empty one first, since PostgreSQL refuses a
    /// new partition for rows the default one holds); partitions older than `compress_after_days`
    /// become columnar, those older than `retain_days` are dropped, as are default-partition rows
    /// that old (0: never). Each step commits on its own, as Citus's columnar conversion does.
    public static let upkeepProcedure = """
        CREATE OR REPLACE PROCEDURE adworker_partition_upkeep(retain_days int, compress_after_days int)
        LANGUAGE plpgsql AS $adworker$
        DECLARE
            target text;
            has_default_rows boolean;
        BEGIN
            FOREACH target IN ARRAY ARRAY['training_data', 'inference_results'] LOOP
                EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', target || '_default') INTO has_default_rows;
                IF has_default_rows THEN
                    EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', target, target || '_default');
                    EXECUTE format('ALTER TABLE %I RENAME TO %I', target || '_default', target || '_default_moving');
                END IF;
                PERFORM create_time_partitions(target::regclass, INTERVAL '1 day', now() + make_interval(days => \(partitionsAhead)));
                IF has_default_rows THEN
                    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', target || '_default', target);
                    EXECUTE format('INSERT INTO %I SELECT * FROM %I', target, target || '_default_moving');
                    EXECUTE format('DROP TABLE %I', target || '_default_moving');
                END IF;
                IF retain_days > 0 THEN
                    EXECUTE format('DELETE FROM %I WHERE enqueued_at < now() - make_interval(days => $1)', target || '_default') USING retain_days;
                END IF;
                COMMIT;
                IF compress_after_days > 0 THEN
                    CALL alter_old_partitions_set_access_method(target::regclass, now() - make_interval(days => compress_after_days), 'columnar');
                END IF;
                IF retain_days > 0 THEN
                    CALL drop_old_time_partitions(target::regclass, now() - make_interval(days => retain_days));
                END IF;
                COMMIT;
            END LOOP;
        END
        $adworker$
        """
}
