//! `cairn savepoint check` on every change the savepoint tests make: a
//! stateless operator inserted, a uid renamed (with and without -n), an
//! operator removed, a state's type changed (incompatibly and compatibly),
//! the max parallelism changed, and a parallelism above it, each with its
//! exit code.
//!
//! This test has no harness: run with `CAIRN_FIXTURE_VARIANT` set it is the
//! job binary (`StreamEnv::from_args`, so it answers `--cairn-plan-json`);
//! run plainly it takes a savepoint of the base job and checks it against
//! itself in each variant, through the same functions the CLI uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::coordinator::control::{AfterSavepoint, OperationStatus, SavepointRequest, SnapshotFormat};
use cairn::prelude::*;
use cairn_state_processor::tools::{self, Severity};
use cairn_state_processor::Options;

const VARIANT: &str = "CAIRN_FIXTURE_VARIANT";

#[derive(Clone, Default)]
struct Count<T> {
    count: Option<ValueState<T>>,
}

macro_rules! count_impl {
    ($t:ty, $one:expr) => {
        impl KeyedProcessFunction<u64, u64, u64> for Count<$t> {
            fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
                self.count = Some(ctx.value_state(ValueStateDescriptor::new("count"))?);
                Ok(())
            }
            fn process_element(&mut self, key: u64, ctx: &mut KeyedContext<'_, u64, u64>) -> OpResult {
                let c = self.count.as_ref().ok_or("not opened")?;
                let v: $t = $one;
                c.update(ctx, &v)?;
                ctx.collect(key);
                Ok(())
            }
        }
    };
}
count_impl!(u64, 1);
count_impl!(String, "one".to_string());
count_impl!(Option<u64>, Some(1));

/// The job in one of its versions.
fn build(env: &StreamEnv, variant: &str) {
    let src = env
        .source(GeneratorSource::new(10_000_000, 100).rate(5_000))
        .uid("events")
        .map(|e: GeneratedEvent| e.key);
    let src = if variant == "inserted" {
        src.map(|k| k.wrapping_add(0))
    } else {
        src
    };
    if variant == "removed" {
        src.sink(DiscardSink);
        return;
    }
    let keyed = src.key_by(|k: &u64| *k);
    let counted = match variant {
        "type-changed" => keyed.process(Count::<String>::default()),
        "type-widened" => keyed.process(Count::<Option<u64>>::default()),
        _ => keyed.process(Count::<u64>::default()),
    };
    let counted = counted.uid(if variant == "renamed" { "counter-v2" } else { "counter" });
    let counted = match variant {
        "max-parallelism-changed" => counted.set_max_parallelism(256),
        "too-parallel" => counted.set_parallelism(200),
        _ => counted,
    };
    counted.sink(DiscardSink);
}

fn job_main(variant: &str) {
    let env = StreamEnv::from_args().expect("startup arguments");
    build(&env, variant);
    env.execute("check fixture").expect("the job runs");
}

fn savepoint(dir: &Path) -> PathBuf {
    let mut config = cairn::config::Configuration::new();
    config.set("parallelism.default", "2").unwrap();
    config.set("pipeline.max-parallelism", "128").unwrap();
    let env = StreamEnv::with_config(config);
    build(&env, "base");
    let job = env.execute_async("check fixture, base").unwrap();
    let client = job.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while client.metrics().source_records < 500 {
        assert!(
            std::time::Instant::now() < deadline,
            "the job did not start: {:?}",
            client.info()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let op = client
        .trigger_savepoint(
            SavepointRequest {
                target_directory: Some(dir.to_path_buf()),
                format: SnapshotFormat::Canonical,
                then: AfterSavepoint::Stop { drain: false },
            },
            None,
        )
        .unwrap();
    let loc = match client.wait_operation(&op, Duration::from_secs(120)) {
        Some(OperationStatus::Completed { location: Some(l), .. }) => l,
        other => panic!("savepoint did not complete: {other:?}"),
    };
    job.wait().unwrap();
    loc
}

fn check(sp: &Path, variant: &str, args: &[&str]) -> tools::CheckReport {
    let exe = std::env::current_exe().unwrap();
    std::env::set_var(VARIANT, variant);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let plan = tools::plan_of_binary(&exe, &args).unwrap_or_else(|e| panic!("{variant}: {e}"));
    std::env::remove_var(VARIANT);
    tools::check(sp, &plan, Options::default()).unwrap()
}

fn has(r: &tools::CheckReport, sev: Severity, piece: &str) -> bool {
    r.findings
        .iter()
        .any(|f| f.severity == sev && f.message.contains(piece))
}

fn main() {
    if let Ok(v) = std::env::var(VARIANT) {
        job_main(&v);
        return;
    }
    let dir = std::env::temp_dir().join(format!("cairn-spa-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sp = savepoint(&dir);
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut case = |name: &str, ok: bool, report: &tools::CheckReport| {
        if ok {
            passed += 1;
        } else {
            failed.push(format!("{name}:\n{}", report.render()));
        }
    };
    // Each case: the variant, extra job arguments, the exit code, and what the report must say.
    let r = check(&sp, "base", &[]);
    case(
        "unchanged",
        r.exit_code() == 0 && has(&r, Severity::Info, "stored type u64 decodes as u64"),
        &r,
    );
    let r = check(&sp, "inserted", &[]);
    case(
        "stateless operator inserted",
        r.exit_code() == 0 && has(&r, Severity::Info, "uid 'counter' maps to"),
        &r,
    );
    let r = check(&sp, "renamed", &[]);
    case(
        "uid renamed",
        r.exit_code() == 1
            && has(&r, Severity::Error, "'counter'")
            && has(&r, Severity::Error, "-n")
            && has(
                &r,
                Severity::Info,
                "'counter-v2') is new to the snapshot and starts empty",
            ),
        &r,
    );
    let r = check(&sp, "renamed", &["-n"]);
    case(
        "uid renamed, with -n",
        r.exit_code() == 0 && has(&r, Severity::Warning, "dropped (-n is given)"),
        &r,
    );
    let r = check(&sp, "removed", &[]);
    case(
        "operator removed",
        r.exit_code() == 1 && has(&r, Severity::Error, "maps to no operator"),
        &r,
    );
    let r = check(&sp, "type-changed", &[]);
    case(
        "type changed",
        r.exit_code() == 1 && has(&r, Severity::Error, "stored as u64, the job declares String"),
        &r,
    );
    let r = check(&sp, "type-widened", &[]);
    case(
        "type widened to Option",
        r.exit_code() == 0 && has(&r, Severity::Info, "decodes as Option<u64>"),
        &r,
    );
    let r = check(&sp, "max-parallelism-changed", &[]);
    case(
        "max parallelism changed",
        r.exit_code() == 1 && has(&r, Severity::Error, "max parallelism 128 but the job sets 256"),
        &r,
    );
    let r = check(&sp, "too-parallel", &[]);
    case(
        "parallelism above max",
        r.exit_code() == 1 && has(&r, Severity::Error, "parallelism 200 is above"),
        &r,
    );
    let e = tools::plan_of_binary(Path::new("/nonexistent/job"), &[]).unwrap_err();
    let ok = e.to_string().contains("cannot run the job binary");
    if ok {
        passed += 1;
    } else {
        failed.push(format!("missing binary: {e}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    for f in &failed {
        eprintln!("FAILED {f}");
    }
    println!("check_command: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
