//! The run journal: an embedded redb database with the history of runs and, per workflow and
//! node instance, the key components last planned (so `plan` can explain what changed).

use crate::graph::key::KeyComponents;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;

const RUNS: TableDefinition<u64, &str> = TableDefinition::new("runs");
const LAST: TableDefinition<&str, &str> = TableDefinition::new("last");

/// One run in the history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// Sequential id.
    pub id: u64,
    /// Workflow name.
    pub workflow: String,
    /// Workflow file.
    pub file: String,
    /// Command-line overrides.
    pub sets: Vec<String>,
    /// Start, seconds since the Unix epoch.
    pub started: f64,
    /// End, if it ended.
    pub ended: Option<f64>,
    /// `running`, `ok`, `failed`.
    pub status: String,
    /// Instances that ran / were cached / failed.
    pub ran: usize,
    /// Cached instances.
    pub cached: usize,
    /// Failed instances.
    pub failed: usize,
    /// First error, if any.
    pub error: Option<String>,
}

/// What the journal remembers of a node instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastPlanned {
    /// Key.
    pub key: String,
    /// Components of the key.
    pub components: KeyComponents,
}

/// Handle on the journal database.
pub struct Journal {
    db: Database,
}

fn err(e: impl std::fmt::Display) -> String {
    format!("run journal: {e}")
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Journal {
    /// Open or create the journal at `path`.
    pub fn open(path: &Path) -> Result<Journal, String> {
        let db = Database::create(path)
            .map_err(|e| format!("cannot open the run journal {}: {e}", path.display()))?;
        Ok(Journal { db })
    }

    /// Record the start of a run; returns its id.
    pub fn begin(&self, workflow: &str, file: &str, sets: &[String]) -> Result<RunRecord, String> {
        let w = self.db.begin_write().map_err(err)?;
        let rec;
        {
            let mut t = w.open_table(RUNS).map_err(err)?;
            let id = t
                .last()
                .map_err(err)?
                .map(|(k, _)| k.value() + 1)
                .unwrap_or(1);
            rec = RunRecord {
                id,
                workflow: workflow.into(),
                file: file.into(),
                sets: sets.to_vec(),
                started: now(),
                ended: None,
                status: "running".into(),
                ran: 0,
                cached: 0,
                failed: 0,
                error: None,
            };
            let text = serde_json::to_string(&rec).map_err(err)?;
            t.insert(id, text.as_str()).map_err(err)?;
        }
        w.commit().map_err(err)?;
        Ok(rec)
    }

    /// Store the final state of a run.
    pub fn end(&self, rec: &RunRecord) -> Result<(), String> {
        let w = self.db.begin_write().map_err(err)?;
        {
            let mut t = w.open_table(RUNS).map_err(err)?;
            let text = serde_json::to_string(rec).map_err(err)?;
            t.insert(rec.id, text.as_str()).map_err(err)?;
        }
        w.commit().map_err(err)
    }

    /// The most recent runs, newest first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRecord>, String> {
        let r = self.db.begin_read().map_err(err)?;
        let t = match r.open_table(RUNS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(e)),
        };
        let mut out = Vec::new();
        for item in t.iter().map_err(err)?.rev().take(limit) {
            let (_, v) = item.map_err(err)?;
            if let Ok(rec) = serde_json::from_str(v.value()) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Remember the planned keys of a workflow's instances (one transaction), replacing its
    /// previous plan: instances it no longer has (a sweep value removed) are forgotten, so
    /// `gc` frees their entries.
    pub fn set_last(&self, workflow: &str, items: &[(String, LastPlanned)]) -> Result<(), String> {
        let w = self.db.begin_write().map_err(err)?;
        {
            let mut t = w.open_table(LAST).map_err(err)?;
            let (lo, hi) = (format!("{workflow}\0"), format!("{workflow}\u{1}"));
            let stale: Vec<String> = t
                .range(lo.as_str()..hi.as_str())
                .map_err(err)?
                .filter_map(|item| item.ok().map(|(k, _)| k.value().to_string()))
                .collect();
            for k in &stale {
                t.remove(k.as_str()).map_err(err)?;
            }
            for (inst, lp) in items {
                let k = format!("{workflow}\0{inst}");
                let v = serde_json::to_string(lp).map_err(err)?;
                t.insert(k.as_str(), v.as_str()).map_err(err)?;
            }
        }
        w.commit().map_err(err)
    }

    /// What was last planned for an instance of a workflow.
    pub fn last(&self, workflow: &str, inst: &str) -> Result<Option<LastPlanned>, String> {
        let r = self.db.begin_read().map_err(err)?;
        let t = match r.open_table(LAST) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let k = format!("{workflow}\0{inst}");
        Ok(t.get(k.as_str())
            .map_err(err)?
            .and_then(|v| serde_json::from_str(v.value()).ok()))
    }

    /// Every key the journal still refers to (what `gc` keeps).
    pub fn referenced_keys(&self) -> Result<std::collections::HashSet<String>, String> {
        let r = self.db.begin_read().map_err(err)?;
        let t = match r.open_table(LAST) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Default::default()),
            Err(e) => return Err(err(e)),
        };
        let mut out = std::collections::HashSet::new();
        for item in t.iter().map_err(err)? {
            let (_, v) = item.map_err(err)?;
            if let Ok(lp) = serde_json::from_str::<LastPlanned>(v.value()) {
                out.insert(lp.key);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_last_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(&d.path().join("j.redb")).unwrap();
        let mut r = j.begin("wf", "wf.yaml", &[]).unwrap();
        r.status = "ok".into();
        j.end(&r).unwrap();
        let r2 = j.begin("wf", "wf.yaml", &["a=1".into()]).unwrap();
        assert_eq!(r2.id, 2);
        let runs = j.runs(10).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].id, 2);
        assert_eq!(runs[1].status, "ok");
        let lp = LastPlanned {
            key: "abc".into(),
            components: KeyComponents::default(),
        };
        j.set_last("wf", &[("n".into(), lp.clone())]).unwrap();
        assert_eq!(j.last("wf", "n").unwrap(), Some(lp.clone()));
        assert!(j.referenced_keys().unwrap().contains("abc"));
        // A later plan without instance `n` (a sweep value removed) forgets its key; other
        // workflows' plans stay.
        let other = LastPlanned {
            key: "def".into(),
            components: KeyComponents::default(),
        };
        j.set_last("wf2", &[("n".into(), other)]).unwrap();
        let m = LastPlanned {
            key: "ghi".into(),
            components: KeyComponents::default(),
        };
        j.set_last("wf", &[("m".into(), m)]).unwrap();
        let keys = j.referenced_keys().unwrap();
        assert!(!keys.contains("abc"), "{keys:?}");
        assert!(keys.contains("def") && keys.contains("ghi"), "{keys:?}");
        assert_eq!(j.last("wf", "n").unwrap(), None);
    }
}
