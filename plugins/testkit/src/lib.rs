//! `testkit`: node types that exercise the engine rather than do science.
//!
//! - `noop-source`, `noop`, `noop-join`: no-op nodes passing a tiny `token` (engine overhead
//!   benchmarks, large DAG tests).
//! - `fail`, `panic`: a node that returns an error or panics after an optional delay (fault tests).
//! - `stream-source`, `pass`, `sink`: synthetic volume chunks of a given size, a zero-copy
//!   pass-through, and a consumer that checks and counts them (streaming benchmarks).
//! - `pass` takes `sleep_ms` to slow a pipeline down (kill-and-resume tests).

use serde::Deserialize;
use std::time::Duration;
use tomoflow_sdk::prelude::*;
use tomoflow_sdk::schemars::{self, JsonSchema};
use tomoflow_sdk::volume::{chunk_message, ChunkMeta};

/// Parameters of the no-op nodes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopParams {
    /// Any value; it only changes the cache key.
    #[serde(default)]
    pub tag: Option<String>,
}

fn token(ctx: &mut Ctx, info: &str) -> Result<()> {
    ctx.emit("token", Message::json(serde_json::json!({ "from": info })))
}

/// A source of one token.
pub struct NoopSource(String);
impl Node for NoopSource {
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        token(ctx, &self.0)
    }
}
impl NodeDef for NoopSource {
    type Params = NoopParams;
    const NAME: &'static str = "noop-source";
    const DOC: &'static str = "Emit one token and nothing else (engine benchmarks and tests).";
    const INPUTS: &'static [Port] = &[];
    const OUTPUTS: &'static [Port] = &[port("token", "token", "a tiny JSON message")];
    fn create(_p: NoopParams, info: &NodeInfo) -> Result<Self> {
        Ok(NoopSource(info.node_id.clone()))
    }
}

/// Consumes tokens, emits one.
pub struct Noop(String);
impl Node for Noop {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, _msg: Message) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        token(ctx, &self.0)
    }
}
impl NodeDef for Noop {
    type Params = NoopParams;
    const NAME: &'static str = "noop";
    const DOC: &'static str = "Consume tokens and emit one (engine benchmarks and tests).";
    const INPUTS: &'static [Port] = &[port("token", "token", "upstream token")];
    const OUTPUTS: &'static [Port] = &[port("token", "token", "a tiny JSON message")];
    fn create(_p: NoopParams, info: &NodeInfo) -> Result<Self> {
        Ok(Noop(info.node_id.clone()))
    }
}

/// Joins two token streams.
pub struct NoopJoin(String);
impl Node for NoopJoin {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, _msg: Message) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        token(ctx, &self.0)
    }
}
impl NodeDef for NoopJoin {
    type Params = NoopParams;
    const NAME: &'static str = "noop-join";
    const DOC: &'static str = "Consume tokens from two inputs and emit one.";
    const INPUTS: &'static [Port] = &[
        port("a", "token", "first input"),
        port("b", "token", "second input"),
    ];
    const OUTPUTS: &'static [Port] = &[port("token", "token", "a tiny JSON message")];
    fn create(_p: NoopParams, info: &NodeInfo) -> Result<Self> {
        Ok(NoopJoin(info.node_id.clone()))
    }
}

/// Parameters of `fail` and `panic`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultParams {
    /// Message of the error (or panic).
    #[serde(default = "default_fault")]
    pub message: String,
    /// Milliseconds to wait before failing.
    #[serde(default)]
    pub delay_ms: u64,
}
fn default_fault() -> String {
    "deliberate failure".into()
}

/// Fails with an error after consuming its input.
pub struct Fail(FaultParams);
impl Node for Fail {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, _msg: Message) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        std::thread::sleep(Duration::from_millis(self.0.delay_ms));
        bail!("{}", self.0.message)
    }
}
impl NodeDef for Fail {
    type Params = FaultParams;
    const NAME: &'static str = "fail";
    const DOC: &'static str =
        "Return an error (after its token input ended and an optional delay).";
    const INPUTS: &'static [Port] = &[port("token", "token", "waits for this")];
    const OUTPUTS: &'static [Port] = &[port("token", "token", "never emitted")];
    fn create(p: FaultParams, _info: &NodeInfo) -> Result<Self> {
        Ok(Fail(p))
    }
}

/// Panics after consuming its input.
pub struct Panic(FaultParams);
impl Node for Panic {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, _msg: Message) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        std::thread::sleep(Duration::from_millis(self.0.delay_ms));
        panic!("{}", self.0.message)
    }
}
impl NodeDef for Panic {
    type Params = FaultParams;
    const NAME: &'static str = "panic";
    const DOC: &'static str = "Panic (after its token input ended and an optional delay): the SDK turns it into an error.";
    const INPUTS: &'static [Port] = &[port("token", "token", "waits for this")];
    const OUTPUTS: &'static [Port] = &[port("token", "token", "never emitted")];
    fn create(p: FaultParams, _info: &NodeInfo) -> Result<Self> {
        Ok(Panic(p))
    }
}

/// Parameters of `stream-source`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// Number of chunks.
    #[schemars(range(min = 1))]
    pub chunks: usize,
    /// Chunk size in MiB of f32 voxels (each chunk is a slab of 1024 x 1024 voxels x depth).
    #[serde(default = "default_mib")]
    #[schemars(range(min = 1, max = 4096))]
    pub chunk_mib: usize,
}
fn default_mib() -> usize {
    64
}

/// Emits synthetic volume slabs.
pub struct StreamSource(StreamParams, u64);
impl Node for StreamSource {
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        let depth = self.0.chunk_mib / 4;
        let depth = depth.max(1);
        let (ny, nx) = (1024usize, 1024usize);
        let full = [depth * self.0.chunks, ny, nx];
        for i in 0..self.0.chunks {
            ctx.check_cancelled()?;
            let meta = ChunkMeta {
                full_shape: full,
                offset: [i * depth, 0, 0],
                shape: [depth, ny, nx],
                core_offset: [i * depth, 0, 0],
                core_shape: [depth, ny, nx],
                voxel_size: [10.0; 3],
                origin: [0.0; 3],
                index: i,
                count: self.0.chunks,
            };
            let v = (self.1.wrapping_add(i as u64) % 1000) as f32;
            ctx.emit("volume", chunk_message(&meta, vec![v; depth * ny * nx]))?;
            ctx.progress(i as u64 + 1, self.0.chunks as u64);
        }
        Ok(())
    }
}
impl NodeDef for StreamSource {
    type Params = StreamParams;
    const NAME: &'static str = "stream-source";
    const DOC: &'static str =
        "Emit `chunks` synthetic volume slabs of `chunk_mib` MiB each (streaming benchmarks).";
    const INPUTS: &'static [Port] = &[];
    const OUTPUTS: &'static [Port] = &[port("volume", "volume", "synthetic slabs")];
    fn create(p: StreamParams, info: &NodeInfo) -> Result<Self> {
        Ok(StreamSource(p, info.seed))
    }
}

/// Parameters of `pass` and `sleep`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PassParams {
    /// Milliseconds to sleep per chunk.
    #[serde(default)]
    pub sleep_ms: u64,
}

/// Re-emits every chunk unchanged, without copying.
pub struct Pass(u64);
impl Node for Pass {
    fn process(&mut self, ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        if self.0 > 0 {
            std::thread::sleep(Duration::from_millis(self.0));
        }
        ctx.emit("volume", msg)
    }
    fn finish(&mut self, _ctx: &mut Ctx) -> Result<()> {
        Ok(())
    }
}
impl NodeDef for Pass {
    type Params = PassParams;
    const NAME: &'static str = "pass";
    const DOC: &'static str =
        "Pass volume chunks through unchanged and without a copy (optionally sleeping per chunk).";
    const INPUTS: &'static [Port] = &[port("volume", "volume", "input")];
    const OUTPUTS: &'static [Port] = &[port("volume", "volume", "the same chunks")];
    fn create(p: PassParams, _info: &NodeInfo) -> Result<Self> {
        Ok(Pass(p.sleep_ms))
    }
}

/// Counts the bytes of the chunks it receives.
pub struct Sink {
    bytes: u64,
    chunks: u64,
}
impl Node for Sink {
    fn process(&mut self, _ctx: &mut Ctx, _input: usize, msg: Message) -> Result<()> {
        let (_, data) = tomoflow_sdk::volume::chunk_f32(&msg)?;
        // Touch the data so that the benchmark measures real delivery.
        let first = data.first().copied().unwrap_or(0.0);
        if data.last().copied().unwrap_or(0.0) != first {
            bail!("chunk changed in transit");
        }
        self.bytes += (data.len() * 4) as u64;
        self.chunks += 1;
        Ok(())
    }
    fn finish(&mut self, ctx: &mut Ctx) -> Result<()> {
        ctx.emit(
            "metrics",
            Message::json(serde_json::json!({"bytes": self.bytes, "chunks": self.chunks})),
        )
    }
}
impl NodeDef for Sink {
    type Params = NoopParams;
    const NAME: &'static str = "sink";
    const DOC: &'static str = "Consume volume chunks and report how many bytes arrived.";
    const INPUTS: &'static [Port] = &[port("volume", "volume", "input")];
    const OUTPUTS: &'static [Port] = &[port("metrics", "metrics", "bytes and chunks received")];
    fn create(_p: NoopParams, _info: &NodeInfo) -> Result<Self> {
        Ok(Sink {
            bytes: 0,
            chunks: 0,
        })
    }
}

export_plugin! {
    name: "testkit",
    version: env!("CARGO_PKG_VERSION"),
    description: "Engine test and benchmark nodes: no-ops, faults, synthetic streams",
    nodes: [NoopSource, Noop, NoopJoin, Fail, Panic, StreamSource, Pass, Sink],
}
