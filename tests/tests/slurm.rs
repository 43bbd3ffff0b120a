//! The Slurm executor against a real single-node Slurm cluster started by this test (munged,
//! slurmctld and slurmd in the foreground; Debian packages slurmctld, slurmd, slurm-client, munge
//! installed by `.ci/run`). Needs root. Every daemon the test starts is stopped at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    daemons: Vec<Child>,
    munged_pid: Option<i32>,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let ready = is_root
            && ["slurmctld", "slurmd", "sbatch", "squeue", "munged"]
                .iter()
                .all(|c| have(c));
        if !ready {
            if std::env::var_os("CI").is_some() {
                panic!("CI needs root and the Slurm packages (slurmctld slurmd slurm-client munge): see .ci/run");
            }
            eprintln!("skipping: needs root and slurmctld/slurmd/slurm-client/munge");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let port = 20000 + (std::process::id() % 20000) as u16;
        for d in ["state", "spool"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let p = |s: &str| dir.path().join(s).display().to_string();
        let conf = dir.path().join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=tomoflowtest\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\nAuthType=auth/munge\n\
                 ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\n\
                 SelectTypeParameters=CR_Core_Memory\nAccountingStorageType=accounting_storage/none\n\
                 JobAcctGatherType=jobacct_gather/none\nStateSaveLocation={}\nSlurmdSpoolDir={}\n\
                 SlurmctldPidFile={}\nSlurmdPidFile={}\nSlurmctldPort={port}\nSlurmdPort={}\nReturnToService=2\n\
                 MpiDefault=none\nDefMemPerCPU=500\nSchedulerParameters=sched_interval=1,sched_min_interval=100000\n\
                 NodeName={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN\n\
                 PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
                p("state"),
                p("spool"),
                p("slurmctld.pid"),
                p("slurmd.pid"),
                port + 1
            ),
        )
        .unwrap();
        // munge: reuse a running daemon, else start one as the munge user.
        let munge_ok = || {
            Command::new("sh")
                .args(["-c", "munge -n | unmunge"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let mut munged_pid = None;
        if !munge_ok() {
            std::fs::create_dir_all("/run/munge").unwrap();
            Command::new("chown")
                .args(["munge:munge", "/run/munge"])
                .status()
                .unwrap();
            let st = Command::new("runuser")
                .args(["-u", "munge", "--", "munged"])
                .status()
                .unwrap();
            assert!(st.success(), "munged did not start");
            std::thread::sleep(Duration::from_millis(300));
            munged_pid = std::fs::read_to_string("/run/munge/munged.pid")
                .ok()
                .and_then(|s| s.trim().parse().ok());
            assert!(munge_ok(), "munge does not work");
        }
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let ctld = Command::new("slurmctld")
            .args(["-D", "-f"])
            .arg(&conf)
            .stdout(log("ctld.log"))
            .stderr(log("ctld.err"))
            .spawn()
            .unwrap();
        let d = Command::new("slurmd")
            .args(["-D", "-f"])
            .arg(&conf)
            .env("SLURM_CONF", &conf)
            .stdout(log("d.log"))
            .stderr(log("d.err"))
            .spawn()
            .unwrap();
        let c = Cluster {
            dir,
            conf,
            daemons: vec![ctld, d],
            munged_pid,
        };
        let t0 = Instant::now();
        loop {
            let o = Command::new("sinfo")
                .args(["-h", "-o", "%T"])
                .env("SLURM_CONF", &c.conf)
                .output()
                .unwrap();
            let s = String::from_utf8_lossy(&o.stdout).to_string();
            if s.contains("idle") {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(40),
                "the test cluster did not come up: {s}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        Some(c)
    }

    fn tomoflow(&self, dir: &Path, args: &[&str]) -> Output {
        common::tomoflow()
            .current_dir(dir)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .env("TOMOFLOW_LOG", "warn")
            .output()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("scancel")
            .args(["-u", "root"])
            .env("SLURM_CONF", &self.conf)
            .status();
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        if let Some(pid) = self.munged_pid {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = &self.dir;
    }
}

const SWEEP: &str = r#"version: 1
name: cluster
params: {seed: 4, kind: noop}
sweep:
  matrix:
    size: [8, 12]
    inv: [false, true]
nodes:
  ph:
    plugin: phantom
    params: {shape: ["${sweep.size}", 16, 16], objects: [{kind: sphere, center: [0, 0, 0], radius: 30, density: 1.0}]}
  norm:
    plugin: normalize
    params: {invert: "${sweep.inv}"}
    inputs: {volume: ph.volume}
  stats:
    plugin: volume-stats
    inputs: {volume: norm.volume}
  tok:
    plugin: noop-source
  gate:
    plugin: "${params.kind}"
    inputs: {token: tok.token}
  after:
    plugin: noop
    inputs: {token: gate.token}
exports:
  - {from: stats.metrics, to: "out/{instance}/stats.json"}
  - {from: norm.volume, to: "out/{instance}/norm.mrc"}
"#;

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for size in [8, 12] {
        for inv in [false, true] {
            for f in ["stats.json", "norm.mrc"] {
                let rel = format!("out/size={size},inv={inv}/{f}");
                v.push((
                    rel.clone(),
                    std::fs::read(dir.join(&rel)).unwrap_or_default(),
                ));
            }
        }
    }
    v
}

#[test]
fn slurm_arrays_dependencies_failure_and_resume() {
    let Some(cluster) = Cluster::start() else {
        return;
    };

    // Reference: the local executor.
    let local = tempfile::tempdir().unwrap();
    std::fs::write(local.path().join("wf.yaml"), SWEEP).unwrap();
    let o = cluster.tomoflow(local.path(), &["run", "wf.yaml", "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    let want = files(local.path());
    assert!(want.iter().all(|(_, b)| !b.is_empty()));

    // 1. A sweep on Slurm: arrays for swept nodes, afterok dependencies, identical results.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("wf.yaml"), SWEEP).unwrap();
    let o = cluster.tomoflow(
        work.path(),
        &["run", "wf.yaml", "--executor", "slurm", "--poll", "0.3"],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("submitted norm: job") && t.contains("(array of 4)"),
        "{t}"
    );
    assert!(
        t.contains("submitted ph: job") && t.contains("(array of 2)"),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("submitted norm:") && l.contains(", afterok:")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("submitted stats:") && l.contains(", aftercorr:")),
        "per-index dependency between arrays of the same partitioning: {t}"
    );
    assert_eq!(
        files(work.path()),
        want,
        "Slurm results equal the local executor's bit for bit"
    );

    // 2. A failing job: its dependents are cancelled, the run names the node and its log.
    let fail = tempfile::tempdir().unwrap();
    std::fs::write(fail.path().join("wf.yaml"), SWEEP).unwrap();
    let o = cluster.tomoflow(
        fail.path(),
        &[
            "run",
            "wf.yaml",
            "--executor",
            "slurm",
            "--poll",
            "0.3",
            "--set",
            "kind=fail",
        ],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("node gate failed") && t.contains("log: "), "{t}");
    let log = t
        .split("log: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let log_text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("log {log}: {e}\n{t}"));
    assert!(log_text.contains("deliberate failure"), "{log_text}");
    let after = t.lines().find(|l| l.starts_with("after ")).unwrap_or("");
    assert!(after.contains("cancelled"), "{t}");

    // 3. Rerun after fixing the cause: only the unfinished part is submitted.
    let o = cluster.tomoflow(
        fail.path(),
        &["run", "wf.yaml", "--executor", "slurm", "--poll", "0.3"],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let submitted: Vec<&str> = t.lines().filter(|l| l.starts_with("submitted ")).collect();
    assert_eq!(submitted.len(), 2, "only gate and after run again: {t}");
    assert!(
        submitted[0].starts_with("submitted gate:") && submitted[1].starts_with("submitted after:"),
        "{t}"
    );
    assert_eq!(files(fail.path()), want);

    // 4. Ctrl-C on the submitting process cancels every submitted job.
    let slow = tempfile::tempdir().unwrap();
    std::fs::write(
        slow.path().join("wf.yaml"),
        "version: 1\nname: slow\nnodes:\n  ph:\n    plugin: phantom\n    params: {shape: [40, 8, 8], slab: 1}\n  p:\n    plugin: pass\n    params: {sleep_ms: 500}\n    inputs: {volume: ph.volume}\n  after:\n    plugin: volume-stats\n    inputs: {volume: p.volume}\n",
    )
    .unwrap();
    let child = common::tomoflow()
        .current_dir(slow.path())
        .args(["run", "wf.yaml", "--executor", "slurm", "--poll", "0.3"])
        .env("SLURM_CONF", &cluster.conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the `pass` job runs, then interrupt.
    let t0 = Instant::now();
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-o", "%j %T"])
            .env("SLURM_CONF", &cluster.conf)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&q.stdout).contains("tf-p RUNNING") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the slow job never started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("interrupted"), "{t}");
    let t0 = Instant::now();
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-o", "%j"])
            .env("SLURM_CONF", &cluster.conf)
            .output()
            .unwrap();
        let names = String::from_utf8_lossy(&q.stdout).to_string();
        if !names.contains("tf-") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "jobs still queued after Ctrl-C: {names}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
