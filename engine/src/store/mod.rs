//! The content-addressed store under `.tomoflow/`.
//!
//! ```text
//! .tomoflow/
//!   lock                  held (flock) by the run that writes the store
//!   journal.redb          run history and the last key components of every node instance
//!   store/<key>/<port>/<seq>.msg   outputs, streamed as they are emitted
//!   store/<key>/manifest.json      written last, atomically: only then is the entry complete
//!   scratch/<key>/        checkpoints of long nodes; survives interruption
//! ```

pub mod journal;
pub mod msgfile;

use crate::graph::key::KeyComponents;
use crate::plugin::host::Packet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// One stored message file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Path relative to the entry directory.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// blake3 of the file (hex).
    pub blake3: String,
    /// Small messages live inside the manifest (hex of the message file's bytes) instead of a
    /// file of their own: one file and one fsync fewer per small output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

/// Messages up to this many bytes are kept inside the manifest.
pub const INLINE_MAX: usize = 4096;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A file written outside the store by an exporter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExportRecord {
    /// Absolute target path.
    pub path: PathBuf,
    /// Size in bytes (0 for directories).
    pub bytes: u64,
    /// Modification time (ns since the epoch) right after it was written: a later change of
    /// the file by anyone (another run with other parameters, the user) makes it stale.
    pub mtime_ns: u128,
}

impl ExportRecord {
    /// Describe the file now at `path` (metadata only: the export is not read back).
    pub fn of(path: &Path) -> io::Result<ExportRecord> {
        let m = std::fs::metadata(path)?;
        Ok(ExportRecord {
            path: path.to_path_buf(),
            bytes: if m.is_file() { m.len() } else { 0 },
            mtime_ns: mtime_ns(&m),
        })
    }
}

fn mtime_ns(m: &std::fs::Metadata) -> u128 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The completion record of a store entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Format version.
    pub format: u32,
    /// The entry's key.
    pub key: String,
    /// Instance id that produced it (informative: the key is what counts).
    pub instance: String,
    /// What the key is made of.
    pub components: KeyComponents,
    /// Output port -> message files in emission order.
    pub outputs: BTreeMap<String, Vec<FileEntry>>,
    /// For exporters: the file written.
    pub export: Option<ExportRecord>,
    /// Seconds the node ran.
    pub wall_s: f64,
}

impl Manifest {
    /// Total bytes of stored outputs.
    pub fn bytes(&self) -> u64 {
        self.outputs.values().flatten().map(|f| f.bytes).sum()
    }
}

/// Handle on a store directory.
#[derive(Debug)]
pub struct Store {
    /// The `.tomoflow` directory.
    pub root: PathBuf,
    lock: Option<File>,
}

fn ctx(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl Store {
    /// Open (and create) a store directory.
    pub fn open(root: &Path) -> io::Result<Store> {
        for d in ["store", "scratch"] {
            std::fs::create_dir_all(root.join(d)).map_err(|e| ctx(&root.join(d), e))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
            lock: None,
        })
    }

    /// Take the writer lock, or say who holds it.
    pub fn lock(&mut self) -> Result<(), String> {
        let path = self.root.join("lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open the store lock {}: {e}", path.display()))?;
        match f.try_lock() {
            Ok(()) => {
                let info = format!("pid {}", std::process::id());
                let _ = std::fs::write(self.root.join("lock.info"), info);
                self.lock = Some(f);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let who = std::fs::read_to_string(self.root.join("lock.info"))
                    .unwrap_or_else(|_| "another process".into());
                Err(format!(
                    "the store {} is in use by another tomoflow run ({who}); wait for it to finish, or use another --store",
                    self.root.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("cannot lock the store {}: {e}", path.display()))
            }
        }
    }

    /// True when no other process holds the writer lock.
    pub fn is_idle(&self) -> bool {
        if self.lock.is_some() {
            return false;
        }
        match File::options()
            .read(true)
            .write(true)
            .open(self.root.join("lock"))
        {
            Ok(f) => f.try_lock().is_ok(),
            Err(_) => true,
        }
    }

    /// Directory of an entry.
    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join("store").join(key)
    }

    /// Scratch directory of a key (checkpoints).
    pub fn scratch_dir(&self, key: &str) -> PathBuf {
        self.root.join("scratch").join(key)
    }

    /// The manifest of a complete entry, if any.
    pub fn manifest(&self, key: &str) -> Option<Manifest> {
        let text = std::fs::read_to_string(self.entry_dir(key).join("manifest.json")).ok()?;
        let m: Manifest = serde_json::from_str(&text).ok()?;
        (m.key == key).then_some(m)
    }

    /// Whether an entry is complete and, for exports, its file is still in place.
    pub fn is_complete(&self, key: &str) -> Option<Manifest> {
        let m = self.manifest(key)?;
        if let Some(ex) = &m.export {
            let meta = std::fs::metadata(&ex.path).ok()?;
            if (meta.is_file() && meta.len() != ex.bytes) || mtime_ns(&meta) != ex.mtime_ns {
                return None;
            }
        }
        Some(m)
    }

    /// Start writing an entry: clears what an interrupted run left there.
    pub fn writer(&self, key: &str, ports: &[String]) -> io::Result<EntryWriter> {
        let dir = self.entry_dir(key);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| ctx(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| ctx(&dir, e))?;
        Ok(EntryWriter {
            dir,
            key: key.to_string(),
            ports: ports.iter().map(|p| (p.clone(), Vec::new())).collect(),
            created_dirs: HashSet::new(),
        })
    }

    /// Read the messages of one output port of a complete entry, verifying checksums.
    pub fn read_port(
        &self,
        m: &Manifest,
        port: &str,
    ) -> impl Iterator<Item = io::Result<Packet>> + use<> {
        let dir = self.entry_dir(&m.key);
        let files = m.outputs.get(port).cloned().unwrap_or_default();
        files
            .into_iter()
            .map(move |f| read_verified(&dir.join(&f.file), &f))
    }

    /// Every key that has an entry directory, complete or not.
    pub fn keys(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join("store"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Check every entry against its manifest's checksums: how many are complete (a manifest) and incomplete (being written,
    /// or left by a killed run), and what is wrong with which key.
    pub fn check(&self) -> Checked {
        let mut c = Checked::default();
        for k in self.keys() {
            let dir = self.entry_dir(&k);
            if !dir.join("manifest.json").exists() {
                c.incomplete += 1;
                continue;
            }
            c.complete += 1;
            let Some(m) = self.manifest(&k) else {
                c.problems.push((
                    k.clone(),
                    format!("{k}: manifest.json is unreadable or names another key"),
                ));
                continue;
            };
            for f in m.outputs.values().flatten() {
                if let Err(e) = read_verified(&dir.join(&f.file), f) {
                    c.problems.push((k.clone(), format!("{k}/{}: {e}", f.file)));
                }
            }
        }
        c
    }

    /// Remove an entry (the next run that needs it redoes it).
    pub fn remove_entry(&self, key: &str) -> io::Result<()> {
        let dir = self.entry_dir(key);
        std::fs::remove_dir_all(&dir).map_err(|e| ctx(&dir, e))
    }
}

/// What [`Store::check`] found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Entries with a manifest (checked against it).
    pub complete: usize,
    /// Entries without one (not checked).
    pub incomplete: usize,
    /// (key, what is wrong), one per damaged file.
    pub problems: Vec<(String, String)>,
}

/// Size of a file or directory tree in bytes.
pub fn disk_usage(p: &Path) -> u64 {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| disk_usage(&e.path()))
                    .sum()
            })
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

struct HashingReader<R> {
    r: R,
    h: blake3::Hasher,
    n: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.h.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

fn read_verified(path: &Path, f: &FileEntry) -> io::Result<Packet> {
    if let Some(h) = &f.inline {
        let bad = |m: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} (inline): {m}", path.display()),
            )
        };
        let b = unhex(h).ok_or_else(|| bad("not hex"))?;
        if b.len() as u64 != f.bytes || blake3::hash(&b).to_hex().as_str() != f.blake3 {
            return Err(bad("checksum mismatch (corrupt)"));
        }
        return msgfile::read(&b[..], b.len() as u64).map_err(|e| ctx(path, e));
    }
    let file = File::open(path).map_err(|e| ctx(path, e))?;
    let len = file.metadata()?.len();
    if len != f.bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: {} bytes on disk, manifest says {}",
                path.display(),
                len,
                f.bytes
            ),
        ));
    }
    let mut hr = HashingReader {
        r: BufReader::with_capacity(1 << 20, file),
        h: blake3::Hasher::new(),
        n: 0,
    };
    let p = msgfile::read(&mut hr, len).map_err(|e| ctx(path, e))?;
    io::copy(&mut hr, &mut io::sink())?;
    if hr.h.finalize().to_hex().as_str() != f.blake3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: checksum mismatch (corrupt)", path.display()),
        ));
    }
    Ok(p)
}

struct HashingWriter<W> {
    w: W,
    h: blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.h.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Writes the outputs of one node instance into its entry.
#[derive(Debug)]
pub struct EntryWriter {
    dir: PathBuf,
    key: String,
    ports: Vec<(String, Vec<FileEntry>)>,
    created_dirs: HashSet<usize>,
}

impl EntryWriter {
    /// Append one message to output port `port`; durable (fsync) when this returns.
    pub fn write(&mut self, port: usize, p: &Packet) -> io::Result<u64> {
        let (name, files) = &mut self.ports[port];
        let pdir = self.dir.join(&*name);
        let rel = format!("{name}/{:06}.msg", files.len());
        if p.nbytes() as usize + p.meta.len() < INLINE_MAX {
            let mut b = Vec::new();
            let n = msgfile::write(&mut b, p)?;
            if b.len() <= INLINE_MAX {
                files.push(FileEntry {
                    file: rel,
                    bytes: n,
                    blake3: blake3::hash(&b).to_hex().to_string(),
                    inline: Some(hex(&b)),
                });
                return Ok(n);
            }
        }
        if self.created_dirs.insert(port) {
            std::fs::create_dir_all(&pdir).map_err(|e| ctx(&pdir, e))?;
        }
        let path = self.dir.join(&rel);
        let f = File::create(&path).map_err(|e| ctx(&path, e))?;
        let mut hw = HashingWriter {
            w: BufWriter::with_capacity(1 << 20, f),
            h: blake3::Hasher::new(),
        };
        let n = msgfile::write(&mut hw, p).map_err(|e| ctx(&path, e))?;
        hw.flush().map_err(|e| ctx(&path, e))?;
        let f = hw.w.into_inner().map_err(|e| ctx(&path, e.into_error()))?;
        f.sync_data().map_err(|e| ctx(&path, e))?;
        files.push(FileEntry {
            file: rel,
            bytes: n,
            blake3: hw.h.finalize().to_hex().to_string(),
            inline: None,
        });
        Ok(n)
    }

    /// Write the manifest atomically (temp, fsync, rename): the entry is complete.
    pub fn commit(
        self,
        instance: &str,
        components: &KeyComponents,
        export: Option<ExportRecord>,
        wall_s: f64,
    ) -> io::Result<Manifest> {
        let m = Manifest {
            format: 1,
            key: self.key.clone(),
            instance: instance.to_string(),
            components: components.clone(),
            outputs: self.ports.into_iter().collect(),
            export,
            wall_s,
        };
        let tmp = self.dir.join("manifest.json.tmp");
        let text = serde_json::to_string_pretty(&m).map_err(io::Error::other)?;
        {
            let mut f = File::create(&tmp).map_err(|e| ctx(&tmp, e))?;
            f.write_all(text.as_bytes()).map_err(|e| ctx(&tmp, e))?;
        }
        let dst = self.dir.join("manifest.json");
        // The manifest itself is not fsynced, and neither is the directory. Every message file
        // it names was fsynced before this point and small messages live inside it, so the only
        // thing a power loss can do is leave the manifest missing, empty or cut short: it then
        // fails to parse, the entry counts as incomplete and the node reruns. A manifest that
        // parses never points at data that is not on disk. (A SIGKILL loses nothing: the page
        // cache survives the process.) This saves one journal commit per node.
        std::fs::rename(&tmp, &dst).map_err(|e| ctx(&dst, e))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tomoflow_sdk::Tensor;

    #[test]
    fn write_commit_read_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.writer("k1", &["volume".into()]).unwrap();
        let p = Packet {
            meta: "{\"i\":1}".into(),
            tensors: vec![(
                "data".into(),
                Arc::new(Tensor::from_vec(vec![1.5f32; 2000], &[2000])),
            )],
        };
        w.write(0, &p).unwrap();
        w.write(0, &p).unwrap();
        assert!(store.manifest("k1").is_none(), "incomplete until commit");
        let m = w.commit("n", &KeyComponents::default(), None, 0.1).unwrap();
        assert_eq!(store.manifest("k1").unwrap(), m);
        let got: Vec<Packet> = store
            .read_port(&m, "volume")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got.len(), 2);
        assert!(store.check().problems.is_empty());
        // Flip one byte of data: reading and verify must both notice.
        let f = store.entry_dir("k1").join("volume/000001.msg");
        let mut b = std::fs::read(&f).unwrap();
        let last = b.len() - 8;
        b[last] ^= 0xff;
        std::fs::write(&f, b).unwrap();
        assert!(store.read_port(&m, "volume").any(|r| r.is_err()));
        assert_eq!(store.check().problems.len(), 1);
    }

    #[test]
    fn small_messages_live_in_the_manifest_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut w = store.writer("k2", &["metrics".into()]).unwrap();
        let p = Packet {
            meta: "{\"loss\":0.5}".into(),
            tensors: vec![],
        };
        w.write(0, &p).unwrap();
        let m = w.commit("n", &KeyComponents::default(), None, 0.0).unwrap();
        assert!(m.outputs["metrics"][0].inline.is_some());
        assert!(
            !store.entry_dir("k2").join("metrics").exists(),
            "no file for a small message"
        );
        let got: Vec<Packet> = store
            .read_port(&m, "metrics")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got[0].meta, p.meta);
        // Corrupt the inline copy: verify and reading notice.
        let path = store.entry_dir("k2").join("manifest.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let h = m.outputs["metrics"][0].inline.clone().unwrap();
        let mut bad = h.clone();
        bad.replace_range(40..42, if &h[40..42] == "00" { "01" } else { "00" });
        std::fs::write(&path, text.replace(&h, &bad)).unwrap();
        assert_eq!(store.check().problems.len(), 1);
    }

    #[test]
    fn second_locker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Store::open(dir.path()).unwrap();
        let mut b = Store::open(dir.path()).unwrap();
        a.lock().unwrap();
        let e = b.lock().unwrap_err();
        assert!(e.contains("in use by another tomoflow run"), "{e}");
    }
}
