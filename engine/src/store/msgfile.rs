//! The on-disk form of one message (`*.msg`): metadata JSON plus raw tensors.
//!
//! Layout (little-endian, every section padded to 8 bytes):
//! `b"TFMSG001"`, u64 meta length, meta bytes, u32 tensor count, u32 reserved, then per tensor:
//! u32 name length, name, u8 dtype code, u8 bits, u16 lanes, u32 ndim, i64 × ndim shape,
//! u64 data length, data.

use crate::plugin::host::Packet;
use std::io::{self, Read, Write};
use std::sync::Arc;
use tomoflow_sdk::abi::DLDataType;
use tomoflow_sdk::{DType, Tensor};

const MAGIC: &[u8; 8] = b"TFMSG001";
/// Refuse absurd sizes in headers before allocating (corrupt or hostile files).
const MAX_META: u64 = 1 << 30;

fn pad(w: &mut impl Write, written: usize) -> io::Result<usize> {
    let p = (8 - written % 8) % 8;
    w.write_all(&[0u8; 8][..p])?;
    Ok(p)
}

/// Write a packet; returns the number of bytes written.
pub fn write(w: &mut impl Write, p: &Packet) -> io::Result<u64> {
    let mut n = 0usize;
    w.write_all(MAGIC)?;
    w.write_all(&(p.meta.len() as u64).to_le_bytes())?;
    w.write_all(p.meta.as_bytes())?;
    n += 16 + p.meta.len();
    n += pad(w, n)?;
    w.write_all(&(p.tensors.len() as u32).to_le_bytes())?;
    w.write_all(&0u32.to_le_bytes())?;
    n += 8;
    for (name, t) in &p.tensors {
        w.write_all(&(name.len() as u32).to_le_bytes())?;
        w.write_all(name.as_bytes())?;
        n += 4 + name.len();
        n += pad(w, n)?;
        let dt = t.dtype().to_dl();
        w.write_all(&[dt.code, dt.bits])?;
        w.write_all(&dt.lanes.to_le_bytes())?;
        w.write_all(&(t.shape().len() as u32).to_le_bytes())?;
        for d in t.shape() {
            w.write_all(&d.to_le_bytes())?;
        }
        let bytes = t.bytes();
        w.write_all(&(bytes.len() as u64).to_le_bytes())?;
        n += 8 + 8 * t.shape().len() + 8;
        w.write_all(bytes)?;
        n += bytes.len();
        n += pad(w, n)?;
    }
    Ok(n as u64)
}

struct Reader<R> {
    r: R,
    n: usize,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, k: usize) -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; k];
        self.r.read_exact(&mut b)?;
        self.n += k;
        Ok(b)
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8")))
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }
    fn pad(&mut self) -> io::Result<()> {
        let p = (8 - self.n % 8) % 8;
        self.bytes(p).map(|_| ())
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_typed<T: tomoflow_sdk::Element + Default>(
    r: &mut impl Read,
    n: usize,
    dims: &[usize],
) -> io::Result<Tensor> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| bad("tensor too large to allocate"))?;
    v.resize(n, T::default());
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, n * std::mem::size_of::<T>())
    };
    r.read_exact(bytes)?;
    Ok(Tensor::from_vec(v, dims))
}

/// Read a packet written by [`write`]. `limit` is the file size (guards allocations).
pub fn read(r: impl Read, limit: u64) -> io::Result<Packet> {
    let mut rd = Reader { r, n: 0 };
    if rd.bytes(8)? != MAGIC {
        return Err(bad("not a tomoflow message file"));
    }
    let ml = rd.u64()?;
    if ml > MAX_META || ml > limit {
        return Err(bad("metadata length exceeds the file"));
    }
    let meta =
        String::from_utf8(rd.bytes(ml as usize)?).map_err(|_| bad("metadata is not UTF-8"))?;
    rd.pad()?;
    let nt = rd.u32()?;
    rd.u32()?;
    if nt as u64 > limit {
        return Err(bad("tensor count exceeds the file"));
    }
    let mut tensors = Vec::with_capacity(nt as usize);
    for _ in 0..nt {
        let nl = rd.u32()? as u64;
        if nl > 4096 {
            return Err(bad("tensor name too long"));
        }
        let name = String::from_utf8(rd.bytes(nl as usize)?)
            .map_err(|_| bad("tensor name is not UTF-8"))?;
        rd.pad()?;
        let h = rd.bytes(4)?;
        let dt = DLDataType {
            code: h[0],
            bits: h[1],
            lanes: u16::from_le_bytes([h[2], h[3]]),
        };
        let dtype = DType::from_dl(dt).ok_or_else(|| bad("unsupported dtype"))?;
        let ndim = rd.u32()?;
        if ndim > 16 {
            return Err(bad("too many dimensions"));
        }
        let mut dims = Vec::with_capacity(ndim as usize);
        for _ in 0..ndim {
            let d = rd.u64()? as i64;
            if d < 0 {
                return Err(bad("negative extent"));
            }
            dims.push(d as usize);
        }
        let len = rd.u64()?;
        let count = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad("shape overflows"))?;
        let expected = count
            .checked_mul(dtype.size())
            .ok_or_else(|| bad("shape overflows"))?;
        if len != expected as u64 || len > limit {
            return Err(bad(
                "tensor length disagrees with its shape or the file size",
            ));
        }
        let t = match dtype {
            DType::F32 => read_typed::<f32>(&mut rd.r, count, &dims)?,
            DType::F64 => read_typed::<f64>(&mut rd.r, count, &dims)?,
            DType::U8 => read_typed::<u8>(&mut rd.r, count, &dims)?,
            DType::I8 => read_typed::<i8>(&mut rd.r, count, &dims)?,
            DType::U16 => read_typed::<u16>(&mut rd.r, count, &dims)?,
            DType::I16 => read_typed::<i16>(&mut rd.r, count, &dims)?,
            DType::U32 => read_typed::<u32>(&mut rd.r, count, &dims)?,
            DType::I32 => read_typed::<i32>(&mut rd.r, count, &dims)?,
            DType::U64 => read_typed::<u64>(&mut rd.r, count, &dims)?,
            DType::I64 => read_typed::<i64>(&mut rd.r, count, &dims)?,
        };
        rd.n += len as usize;
        rd.pad()?;
        tensors.push((name, Arc::new(t)));
    }
    Ok(Packet { meta, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(meta in "[a-z]{0,20}", data in proptest::collection::vec(-1e6f32..1e6, 0..64), name in "[a-z]{1,9}") {
            let n = data.len();
            let p = Packet {
                meta: format!("{{\"m\":\"{meta}\"}}"),
                tensors: vec![(name.clone(), Arc::new(Tensor::from_vec(data.clone(), &[n]))),
                              ("b".into(), Arc::new(Tensor::from_vec(vec![1u16, 2, 3], &[3, 1])))],
            };
            let mut buf = Vec::new();
            let written = write(&mut buf, &p).unwrap();
            prop_assert_eq!(written as usize, buf.len());
            prop_assert_eq!(buf.len() % 8, 0);
            let q = read(&buf[..], buf.len() as u64).unwrap();
            prop_assert_eq!(&q.meta, &p.meta);
            prop_assert_eq!(q.tensors[0].1.as_slice::<f32>().unwrap(), &data[..]);
            prop_assert_eq!(q.tensors[1].1.shape(), &[3, 1]);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut b = b"TFMSG001".to_vec();
            b.extend(&bytes);
            let _ = read(&b[..], b.len() as u64);
        }
    }

    #[test]
    fn truncated_file_is_an_error() {
        let p = Packet {
            meta: "{}".into(),
            tensors: vec![(
                "d".into(),
                Arc::new(Tensor::from_vec(vec![1.0f32; 100], &[100])),
            )],
        };
        let mut buf = Vec::new();
        write(&mut buf, &p).unwrap();
        buf.truncate(buf.len() - 17);
        assert!(read(&buf[..], buf.len() as u64).is_err());
    }

    /// Found by fuzzing (fuzz target `chunk`): an extent whose byte size overflows.
    #[test]
    fn overflowing_extent_is_an_error() {
        let p = Packet {
            meta: "{}".into(),
            tensors: vec![("d".into(), Arc::new(Tensor::from_vec(vec![1.0f32], &[1])))],
        };
        let mut buf = Vec::new();
        write(&mut buf, &p).unwrap();
        // magic 8 + meta length 8 + "{}" padded to 8, count + reserved 8, name 4 + "d" padded,
        // dtype 4, ndim 4: the extent starts at byte 48.
        buf[48..56].copy_from_slice(&(1i64 << 62).to_le_bytes());
        let e = read(&buf[..], buf.len() as u64).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }
}
