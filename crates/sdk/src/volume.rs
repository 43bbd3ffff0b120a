//! Volumes and their chunks.
//!
//! Conventions (the same everywhere in tomoflow):
//! - Every triple is ordered **(z, y, x)**, the C order of the data (x varies fastest).
//! - `voxel_size` is in Å; `origin` is the position in Å of the **centre** of voxel (0, 0, 0).
//!   The centre of voxel index `i` along an axis is therefore at `origin + i * voxel_size`.
//! - A chunk is an axis-aligned block: `offset`/`shape` describe the data block it carries
//!   (core plus halo), `core_offset`/`core_shape` the part it is responsible for. Cores of the
//!   chunks of one volume tile it exactly once.

use crate::tensor::{Element, Message, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Geometry of one chunk of a volume (or label map), stored in the message metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkMeta {
    /// Shape of the whole volume (z, y, x).
    pub full_shape: [usize; 3],
    /// Offset of the data block in the whole volume.
    pub offset: [usize; 3],
    /// Shape of the data block (core plus halo).
    pub shape: [usize; 3],
    /// Offset of the core in the whole volume.
    pub core_offset: [usize; 3],
    /// Shape of the core.
    pub core_shape: [usize; 3],
    /// Voxel size in Å (z, y, x).
    pub voxel_size: [f64; 3],
    /// Position in Å of the centre of voxel (0, 0, 0) (z, y, x).
    pub origin: [f64; 3],
    /// Index of this chunk in the stream.
    pub index: usize,
    /// Number of chunks in the stream.
    pub count: usize,
}

impl ChunkMeta {
    /// Metadata of a chunk holding a whole volume.
    pub fn whole(shape: [usize; 3], voxel_size: [f64; 3], origin: [f64; 3]) -> ChunkMeta {
        ChunkMeta {
            full_shape: shape,
            offset: [0; 3],
            shape,
            core_offset: [0; 3],
            core_shape: shape,
            voxel_size,
            origin,
            index: 0,
            count: 1,
        }
    }

    /// Number of voxels in the data block.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for an empty block.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Check internal consistency (core inside block, block inside volume, sizes that can be
    /// counted in memory). Arithmetic is checked: hostile geometry is an error, not a panic.
    pub fn validate(&self) -> Result<(), String> {
        let inside = |off: usize, len: usize, lo: usize, hi: usize| {
            off >= lo && off.checked_add(len).is_some_and(|end| end <= hi)
        };
        for a in 0..3 {
            if !inside(self.offset[a], self.shape[a], 0, self.full_shape[a]) {
                return Err(format!(
                    "chunk block exceeds the volume along axis {a}: {self:?}"
                ));
            }
            if !inside(
                self.core_offset[a],
                self.core_shape[a],
                self.offset[a],
                self.offset[a] + self.shape[a],
            ) {
                return Err(format!(
                    "chunk core lies outside its block along axis {a}: {self:?}"
                ));
            }
        }
        let bytes = |s: &[usize; 3]| {
            s.iter()
                .try_fold(16usize, |n, &d| n.checked_mul(d))
                .is_some_and(|n| n <= isize::MAX as usize)
        };
        if !bytes(&self.full_shape) {
            return Err(format!(
                "volume shape {:?} is too large to address",
                self.full_shape
            ));
        }
        if self.index >= self.count.max(1) {
            return Err(format!("chunk index {} out of {}", self.index, self.count));
        }
        Ok(())
    }

    /// Parse from message metadata.
    pub fn from_message(msg: &Message) -> Result<ChunkMeta, String> {
        let v = msg
            .meta
            .get("chunk")
            .ok_or("message carries no `chunk` geometry; is this a volume?")?;
        let m: ChunkMeta =
            serde_json::from_value(v.clone()).map_err(|e| format!("bad chunk geometry: {e}"))?;
        m.validate()?;
        Ok(m)
    }
}

/// A z-slab of a volume: `[z0, z1)` is the block with halo, `[core0, core1)` its core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slab {
    /// First z of the block.
    pub z0: usize,
    /// One past the last z of the block.
    pub z1: usize,
    /// First z of the core.
    pub core0: usize,
    /// One past the last z of the core.
    pub core1: usize,
}

/// Split `depth` planes into slabs of at most `slab` core planes, each with up to `halo` planes
/// of context on either side (clamped at the volume's faces).
pub fn slabs(depth: usize, slab: usize, halo: usize) -> Vec<Slab> {
    let slab = slab.max(1);
    let mut out = Vec::new();
    let mut c0 = 0;
    while c0 < depth {
        let c1 = (c0 + slab).min(depth);
        out.push(Slab {
            z0: c0.saturating_sub(halo),
            z1: (c1 + halo).min(depth),
            core0: c0,
            core1: c1,
        });
        c0 = c1;
    }
    out
}

/// A whole volume in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    /// Voxels in C order (z, y, x).
    pub data: Vec<T>,
    /// Shape (z, y, x).
    pub shape: [usize; 3],
    /// Voxel size in Å (z, y, x).
    pub voxel_size: [f64; 3],
    /// Centre of voxel (0,0,0) in Å (z, y, x).
    pub origin: [f64; 3],
}

impl<T: Element + Default> Volume<T> {
    /// A volume filled with `T::default()`.
    pub fn zeros(shape: [usize; 3], voxel_size: [f64; 3]) -> Volume<T> {
        Volume {
            data: vec![T::default(); shape.iter().product()],
            shape,
            voxel_size,
            origin: [0.0; 3],
        }
    }

    /// Linear index of voxel (z, y, x).
    #[inline]
    pub fn index(&self, z: usize, y: usize, x: usize) -> usize {
        (z * self.shape[1] + y) * self.shape[2] + x
    }

    /// Split into z-slab messages of at most `slab` planes with `halo` planes of context.
    pub fn to_messages(&self, slab: usize, halo: usize) -> Vec<Message> {
        let plane = self.shape[1] * self.shape[2];
        let parts = slabs(self.shape[0], slab, halo);
        let count = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(index, s)| {
                let meta = ChunkMeta {
                    full_shape: self.shape,
                    offset: [s.z0, 0, 0],
                    shape: [s.z1 - s.z0, self.shape[1], self.shape[2]],
                    core_offset: [s.core0, 0, 0],
                    core_shape: [s.core1 - s.core0, self.shape[1], self.shape[2]],
                    voxel_size: self.voxel_size,
                    origin: self.origin,
                    index,
                    count,
                };
                chunk_message(&meta, self.data[s.z0 * plane..s.z1 * plane].to_vec())
            })
            .collect()
    }
}

/// Build a chunk message: geometry in `meta.chunk`, voxels in tensor `"data"`.
pub fn chunk_message<T: Element>(meta: &ChunkMeta, data: Vec<T>) -> Message {
    let mut m = serde_json::Map::new();
    m.insert(
        "chunk".into(),
        serde_json::to_value(meta).expect("serialisable"),
    );
    Message {
        meta: m,
        tensors: vec![("data".into(), Tensor::from_vec(data, &meta.shape))],
    }
}

/// Geometry and f32 voxels of a volume chunk message.
pub fn chunk_f32(msg: &Message) -> anyhow::Result<(ChunkMeta, &[f32])> {
    chunk_data::<f32>(msg)
}

/// Geometry and typed voxels of a chunk message, with checks that they agree.
pub fn chunk_data<T: Element>(msg: &Message) -> anyhow::Result<(ChunkMeta, &[T])> {
    let meta = ChunkMeta::from_message(msg).map_err(anyhow::Error::msg)?;
    let t = msg.tensor("data").map_err(anyhow::Error::msg)?;
    let data = t.as_slice::<T>().map_err(anyhow::Error::msg)?;
    if data.len() != meta.len() {
        anyhow::bail!(
            "chunk data has {} voxels but its geometry says {:?}",
            data.len(),
            meta.shape
        );
    }
    Ok((meta, data))
}

/// Reassembles a whole volume from its chunks (cores only), whatever their order.
#[derive(Debug)]
pub struct Assembler<T> {
    vol: Option<Volume<T>>,
    filled: usize,
}

impl<T: Element + Default> Default for Assembler<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element + Default> Assembler<T> {
    /// An empty assembler.
    pub fn new() -> Assembler<T> {
        Assembler {
            vol: None,
            filled: 0,
        }
    }

    /// Copy the core of one chunk into place.
    pub fn add(&mut self, msg: &Message) -> anyhow::Result<()> {
        let (meta, data) = chunk_data::<T>(msg)?;
        if self.vol.is_none() {
            // The geometry declares the size; allocate fallibly so that an absurd declaration
            // is an error, not an abort.
            let n: usize = meta.full_shape.iter().product();
            let mut buf = Vec::new();
            buf.try_reserve_exact(n).map_err(|_| {
                anyhow::anyhow!(
                    "cannot allocate {:.1} GiB for a volume of shape {:?}",
                    (n * std::mem::size_of::<T>()) as f64 / (1u64 << 30) as f64,
                    meta.full_shape
                )
            })?;
            buf.resize(n, T::default());
            self.vol = Some(Volume {
                data: buf,
                shape: meta.full_shape,
                voxel_size: meta.voxel_size,
                origin: meta.origin,
            });
        }
        let vol = self.vol.as_mut().expect("allocated above");
        if vol.shape != meta.full_shape {
            anyhow::bail!(
                "chunk belongs to a volume of shape {:?}, not {:?}",
                meta.full_shape,
                vol.shape
            );
        }
        let [bz, by, bx] = meta.shape;
        let _ = bz;
        for z in 0..meta.core_shape[0] {
            for y in 0..meta.core_shape[1] {
                let gz = meta.core_offset[0] + z;
                let gy = meta.core_offset[1] + y;
                let lz = gz - meta.offset[0];
                let ly = gy - meta.offset[1];
                let lx = meta.core_offset[2] - meta.offset[2];
                let src = (lz * by + ly) * bx + lx;
                let dst = vol.index(gz, gy, meta.core_offset[2]);
                let n = meta.core_shape[2];
                vol.data[dst..dst + n].copy_from_slice(&data[src..src + n]);
            }
        }
        self.filled += meta.core_shape.iter().product::<usize>();
        Ok(())
    }

    /// True once the cores received cover the whole volume.
    pub fn is_complete(&self) -> bool {
        self.vol
            .as_ref()
            .is_some_and(|v| self.filled == v.data.len())
    }

    /// The assembled volume, or an error if chunks are missing.
    pub fn finish(self) -> anyhow::Result<Volume<T>> {
        let complete = self.is_complete();
        match self.vol {
            None => anyhow::bail!("no chunk received: the input volume is empty"),
            Some(v) if !complete => anyhow::bail!(
                "volume incomplete: {} of {} voxels received",
                self.filled,
                v.data.len()
            ),
            Some(v) => Ok(v),
        }
    }
}

/// Puts z-slabs that arrive in any order back into z order, for writers that stream planes.
///
/// A slab of `planes` planes starting at `z0` is registered with [`ZOrder::arrive`]: when it
/// is the next in order the caller uses it at once (no copy), otherwise it hands over an owned
/// copy with [`ZOrder::hold`]; [`ZOrder::pop`] then yields the held slabs that have become
/// next, in order.
#[derive(Debug)]
pub struct ZOrder<V> {
    next: usize,
    pending: BTreeMap<usize, (usize, V)>,
}

impl<V> Default for ZOrder<V> {
    fn default() -> Self {
        ZOrder {
            next: 0,
            pending: BTreeMap::new(),
        }
    }
}

impl<V> ZOrder<V> {
    /// Register planes `[z0, z0 + planes)`: `Ok(true)` when they are the next in z order (they
    /// count as consumed), `Ok(false)` when they must be [`held`](ZOrder::hold), an error when
    /// any of them arrived before.
    pub fn arrive(&mut self, z0: usize, planes: usize) -> anyhow::Result<bool> {
        let end = z0.saturating_add(planes);
        let before = self.pending.range(..=z0).next_back();
        let after = self.pending.range(z0..).next();
        if z0 < self.next
            || before.is_some_and(|(&s, &(n, _))| s + n > z0)
            || after.is_some_and(|(&s, _)| s < end)
        {
            anyhow::bail!("planes {z0}..{end} arrived twice: they overlap planes received before");
        }
        if z0 == self.next {
            self.next = end;
            return Ok(true);
        }
        Ok(false)
    }

    /// Keep slab `v` of planes `[z0, z0 + planes)` (after `arrive` said `false`) until the
    /// planes before it have arrived.
    pub fn hold(&mut self, z0: usize, planes: usize, v: V) {
        self.pending.insert(z0, (planes, v));
    }

    /// The held slab that is next in z order, with its plane count, if it has arrived.
    pub fn pop(&mut self) -> Option<(usize, V)> {
        let (planes, v) = self.pending.remove(&self.next)?;
        self.next += planes;
        Some((planes, v))
    }

    /// Planes handed out so far, in order: the next plane expected.
    pub fn next_plane(&self) -> usize {
        self.next
    }

    /// True when no slab is held.
    pub fn is_drained(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile geometry (offsets near usize::MAX, shapes that cannot be addressed) is an
    /// error, not an arithmetic panic.
    #[test]
    fn hostile_geometry_is_an_error() {
        let mut m = ChunkMeta::whole([4, 4, 4], [1.0; 3], [0.0; 3]);
        m.offset[0] = usize::MAX;
        assert!(m.validate().is_err());
        let mut m = ChunkMeta::whole([4, 4, 4], [1.0; 3], [0.0; 3]);
        m.core_offset[1] = usize::MAX - 1;
        assert!(m.validate().is_err());
        let m = ChunkMeta::whole([1 << 30, 1 << 30, 1 << 30], [1.0; 3], [0.0; 3]);
        assert!(m.validate().unwrap_err().contains("too large"));
    }
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn slabs_tile_exactly(depth in 1usize..200, slab in 1usize..50, halo in 0usize..8) {
            let s = slabs(depth, slab, halo);
            let mut next = 0;
            for sl in &s {
                prop_assert_eq!(sl.core0, next);
                prop_assert!(sl.z0 <= sl.core0 && sl.core1 <= sl.z1 && sl.z1 <= depth);
                prop_assert!(sl.core1 - sl.core0 <= slab);
                next = sl.core1;
            }
            prop_assert_eq!(next, depth);
        }

        #[test]
        fn split_and_assemble_roundtrip(z in 1usize..12, y in 1usize..6, x in 1usize..6, slab in 1usize..5, halo in 0usize..3) {
            let mut v = Volume::<f32>::zeros([z, y, x], [10.0; 3]);
            for (i, d) in v.data.iter_mut().enumerate() { *d = i as f32; }
            let mut msgs = v.to_messages(slab, halo);
            msgs.reverse();
            let mut a = Assembler::<f32>::new();
            for m in &msgs { a.add(m).unwrap(); }
            prop_assert_eq!(a.finish().unwrap(), v);
        }
    }

    #[test]
    fn incomplete_volume_is_an_error() {
        let v = Volume::<f32>::zeros([4, 2, 2], [1.0; 3]);
        let msgs = v.to_messages(2, 0);
        let mut a = Assembler::<f32>::new();
        a.add(&msgs[0]).unwrap();
        assert!(a.finish().unwrap_err().to_string().contains("incomplete"));
    }

    #[test]
    fn zorder_restores_order_and_rejects_overlaps() {
        let mut o = ZOrder::default();
        assert!(!o.arrive(4, 2).unwrap());
        o.hold(4, 2, "c");
        assert!(!o.arrive(2, 2).unwrap());
        o.hold(2, 2, "b");
        assert!(o.pop().is_none(), "plane 0 has not arrived");
        assert!(o.arrive(3, 1).is_err(), "inside a held slab");
        assert!(o.arrive(1, 2).is_err(), "runs into a held slab");
        assert!(o.arrive(0, 2).unwrap());
        assert_eq!(o.pop(), Some((2, "b")));
        assert_eq!(o.pop(), Some((2, "c")));
        assert_eq!((o.pop(), o.next_plane(), o.is_drained()), (None, 6, true));
        assert!(o.arrive(5, 1).is_err(), "already handed out");
    }

    proptest! {
        /// Whatever the arrival order, every slab comes out once, in z order.
        #[test]
        fn zorder_any_permutation(
            (sizes, order) in proptest::collection::vec(1usize..4, 1..10).prop_flat_map(|sizes| {
                let order = Just((0..sizes.len()).collect::<Vec<usize>>()).prop_shuffle();
                (Just(sizes), order)
            })
        ) {
            let mut starts = Vec::new();
            let mut z = 0;
            for &n in &sizes { starts.push((z, n)); z += n; }
            let mut o = ZOrder::default();
            let mut out = Vec::new();
            for &i in &order {
                let (z0, n) = starts[i];
                if o.arrive(z0, n).unwrap() { out.push(z0) } else { o.hold(z0, n, z0) }
                while let Some((_, v)) = o.pop() { out.push(v) }
            }
            prop_assert_eq!(out, starts.iter().map(|s| s.0).collect::<Vec<_>>());
            prop_assert_eq!(o.next_plane(), z);
            prop_assert!(o.is_drained());
        }
    }
}
