-- Hot apply of gateway configuration versions (docs/adr/0013-gateway-config-versions.md, "Apply"): a version
-- whose difference from what a gateway runs is only in sections OpenClaw reloads in place is written into the
-- running sandbox instead of restarting it.

-- How the version was first applied and found healthy: 'hot' (the gateway reloaded its config file and kept
-- running) or 'restart' (a start or restart of the gateway). Null until applied.
ALTER TABLE gateway_config_versions ADD COLUMN applied_how text CHECK (applied_how IN ('hot', 'restart'));

-- The version a running gateway is to reload in place (null: none asked for). Set with the version's
-- approval; cleared once the instance runs it (or a newer one), or turned into a restart when it cannot be.
ALTER TABLE instances ADD COLUMN config_target integer;
