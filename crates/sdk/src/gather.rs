//! Gathered inputs (`inputs: {x: "node.port[*]"}`): the engine tags every message of such an
//! input with `meta.gather = {"node", "instance", "id", "coords"}` of the upstream instance that
//! sent it. A node that gathers several inputs (tomograms and their label maps, say) pairs them
//! by these sweep coordinates.

use crate::Message;

/// Where a gathered message came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origin {
    /// The upstream instance's id (empty for a message that was not gathered).
    pub id: String,
    /// Its sweep coordinates, axis → value.
    pub coords: serde_json::Map<String, serde_json::Value>,
}

impl Origin {
    /// The origin of `msg` (the default when it carries no `meta.gather`).
    pub fn of(msg: &Message) -> Origin {
        match msg.meta.get("gather") {
            Some(g) => Origin {
                id: g["id"].as_str().unwrap_or("").to_string(),
                coords: g["coords"].as_object().cloned().unwrap_or_default(),
            },
            None => Origin::default(),
        }
    }

    /// Every coordinate of `self` is one of `other`'s: `self` is upstream of, or the same
    /// instance as, `other` (a sample's particle table covers its noisy tomograms).
    pub fn covers(&self, other: &Origin) -> bool {
        self.coords
            .iter()
            .all(|(k, v)| other.coords.get(k) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(meta: serde_json::Value) -> Message {
        Message::json(meta)
    }

    #[test]
    fn origins_pair_by_sweep_coordinates() {
        let sample = Origin::of(&msg(
            serde_json::json!({"gather": {"id": "s1", "coords": {"rep": 1}}}),
        ));
        let tomo = Origin::of(&msg(
            serde_json::json!({"gather": {"id": "t1", "coords": {"rep": 1, "bg": "synthetic"}}}),
        ));
        let other = Origin::of(&msg(
            serde_json::json!({"gather": {"id": "t2", "coords": {"rep": 2}}}),
        ));
        assert_eq!(sample.id, "s1");
        assert!(sample.covers(&tomo) && !tomo.covers(&sample));
        assert!(!sample.covers(&other));
        let plain = Origin::of(&msg(serde_json::json!({"x": 1})));
        assert_eq!(plain, Origin::default());
        assert!(plain.covers(&tomo), "no coordinates: covers everything");
    }
}
