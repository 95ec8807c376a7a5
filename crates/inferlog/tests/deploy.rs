//! deploy/: the Dockerfile and the manifests agree with each other (tests/deploy_check.py:
//! config path, data dir, ports, probes, users, selectors), and every ConfigMap's
//! inferlog.toml, with the containers' INFERLOG_* variables, loads with the real parser.

use crate::support::*;
use std::process::Command;

#[test]
fn deploy_manifests_agree_and_their_configs_load() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/deploy_check.py");
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_str().unwrap();
    let out = Command::new(python()).args([script, root, dir_str]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "deploy_check.py:\n{}", String::from_utf8_lossy(&out.stderr));
    let configs: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("config ")).collect();
    let env: Vec<(&str, &str)> = stdout.lines().filter_map(|l| l.strip_prefix("env ")).map(|l| l.split_once(' ').unwrap_or((l, ""))).collect();
    assert_eq!(configs.len(), 2, "configmap.yaml and sidecar.yaml: {stdout}");
    assert!(env.iter().any(|(name, _)| *name == "INFERLOG_GATEWAY_NAME"), "{stdout}");
    for config in configs {
        let mut command = Command::new(bin());
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("INFERLOG_")) {
            command.env_remove(name);
        }
        // --data-dir (flags win) keeps the check off /var/lib/inferlog; unknown INFERLOG_*
        // names and bad values fail here, named by the real parser.
        let out = command.args(["endpoints", "--config", config, "--data-dir", dir_str]).envs(env.iter().copied()).output().unwrap();
        assert!(out.status.success(), "{config} with {env:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("iris\t"), "{config}: {}", String::from_utf8_lossy(&out.stdout));
    }
}
