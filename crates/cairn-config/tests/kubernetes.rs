//! The Kubernetes manifests in deploy/kubernetes: valid for Kubernetes
//! (checked offline against its schemas with `kubernetes-validate --strict`
//! from PyPI, which `.ci/services/kubernetes.sh` installs and names in
//! `CAIRN_KUBERNETES_VALIDATE`), and valid for Cairn: the embedded
//! config.yaml and the containers' startup flags parse as the job binary
//! will parse them, and the upgrade script's assumptions about the
//! coordinator's arguments hold.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_config::{options, parse_startup_args_with_conf_dir, Configuration};

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn manifest() -> String {
    std::fs::read_to_string(manifests_dir().join("cairn-job.yaml")).unwrap()
}

/// The YAML documents of a multi-document file.
fn documents(text: &str) -> Vec<yaml_serde::Value> {
    text.split("\n---\n")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|d| yaml_serde::from_str(d).unwrap())
        .collect()
}

fn kind<'a>(docs: &'a [yaml_serde::Value], kind: &str, name: &str) -> &'a yaml_serde::Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn args(doc: &yaml_serde::Value) -> Vec<String> {
    doc["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// `kubernetes-validate`, or `None` (skipped, said why) when not installed.
fn validator() -> Option<PathBuf> {
    match std::env::var_os("CAIRN_KUBERNETES_VALIDATE") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var("CAIRN_REQUIRE_KUBERNETES_VALIDATE").as_deref() != Ok("1"),
                "CAIRN_REQUIRE_KUBERNETES_VALIDATE=1 but CAIRN_KUBERNETES_VALIDATE is not set"
            );
            eprintln!("SKIPPED: install kubernetes-validate from PyPI and set CAIRN_KUBERNETES_VALIDATE to it");
            None
        }
    }
}

#[test]
fn the_manifests_pass_kubernetes_schema_validation_and_a_broken_one_does_not() {
    let Some(validate) = validator() else { return };
    let dir = manifests_dir();
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(!files.is_empty());
    for f in &files {
        let out = Command::new(&validate).arg("--strict").arg(f).output().unwrap();
        assert!(
            out.status.success(),
            "{} is not valid:\n{}{}",
            f.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The validator does reject what Kubernetes would: a field of the wrong
    // type, and an unknown field.
    let tmp = std::env::temp_dir().join(format!("cairn-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for (what, from, to) in [
        ("a string replica count", "replicas: 4", "replicas: four"),
        (
            "an unknown field",
            "podManagementPolicy: Parallel",
            "podManagementPolicy: Parallel\n  workerCount: 4",
        ),
    ] {
        let broken = tmp.join("broken.yaml");
        let text = manifest();
        assert!(text.contains(from));
        std::fs::write(&broken, text.replacen(from, to, 1)).unwrap();
        let out = Command::new(&validate).arg("--strict").arg(&broken).output().unwrap();
        assert!(!out.status.success(), "{what} passed validation");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn the_manifests_configure_cairn_as_the_job_binary_reads_it() {
    let docs = documents(&manifest());
    let config_map = kind(&docs, "ConfigMap", "cairn-config");
    let yaml = config_map["data"]["config.yaml"].as_str().unwrap();
    let config = Configuration::from_yaml_str(yaml, "cairn-config/config.yaml").unwrap();
    assert!(config
        .get(&options::CHECKPOINTS_DIR)
        .is_some_and(|d| d.to_string_lossy().starts_with("s3://")));
    assert!(
        config.get(&options::CLUSTER_LINGER),
        "the finished coordinator keeps its pod"
    );
    let rpc_port = config.get(&options::JOBMANAGER_RPC_PORT);

    // The coordinator: the config directory the pod mounts, then its flags.
    let conf_dir = std::env::temp_dir().join(format!("cairn-k8s-conf-{}", std::process::id()));
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("config.yaml"), yaml).unwrap();
    let coordinator = kind(&docs, "Deployment", "cairn-coordinator");
    let c_args = args(coordinator);
    let opts = parse_startup_args_with_conf_dir(c_args.clone(), Some(&conf_dir)).unwrap();
    assert_eq!(opts.config.get(&options::CLUSTER_MODE), "coordinator");
    assert_eq!(opts.config.get(&options::PARALLELISM_DEFAULT), 4);
    // upgrade.sh replaces args[0] (restore flag) and args[1] (parallelism).
    assert!(c_args[0].starts_with("--claim-mode=") || c_args[0].starts_with("--fromSavepoint="));
    assert!(c_args[1].starts_with("-Dparallelism.default="));
    let restored = {
        let mut a = c_args.clone();
        a[0] = "--fromSavepoint=s3://cairn-state/savepoints/savepoint-0a1b2c-000000000000".into();
        a[1] = "-Dparallelism.default=8".into();
        parse_startup_args_with_conf_dir(a, Some(&conf_dir)).unwrap()
    };
    assert!(restored.restore_path.is_some());
    assert_eq!(restored.config.get(&options::PARALLELISM_DEFAULT), 8);
    let ports = coordinator["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_sequence()
        .unwrap();
    assert!(ports
        .iter()
        .any(|p| p["containerPort"].as_u64() == Some(u64::from(rpc_port))));

    // The workers find the coordinator through its Service.
    let workers = kind(&docs, "StatefulSet", "cairn-worker");
    let w = parse_startup_args_with_conf_dir(args(workers), Some(&conf_dir)).unwrap();
    assert_eq!(w.config.get(&options::CLUSTER_MODE), "worker");
    assert_eq!(w.config.get(&options::JOBMANAGER_RPC_ADDRESS), "cairn-coordinator");
    assert_eq!(w.config.get(&options::JOBMANAGER_RPC_PORT), rpc_port);
    kind(&docs, "Service", "cairn-coordinator");
    let replicas = workers["spec"]["replicas"].as_u64().unwrap();
    let slots = u64::from(config.get(&options::TASK_SLOTS));
    assert!(replicas * slots >= 4, "enough slots for the parallelism");
    let _ = std::fs::remove_dir_all(&conf_dir);

    // The upgrade script is valid shell.
    let script = manifests_dir().join("upgrade.sh");
    let ok = Command::new("bash").arg("-n").arg(&script).status().unwrap().success();
    assert!(ok, "upgrade.sh has a syntax error");
}
