//! Latency histograms: HDR histograms in microseconds, shipped between worker processes in their
//! V2 serialized form (base64) so that the parent can merge them without losing precision.

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// Highest value recorded, in microseconds (60 s): anything slower is clamped and still counted.
const MAX_MICROS: u64 = 60_000_000;

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"))
    }
}

impl Hist {
    pub fn record(&mut self, d: Duration) {
        self.record_micros(d.as_micros() as u64);
    }

    pub fn record_micros(&mut self, micros: u64) {
        self.0.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn merge(&mut self, other: &Hist) {
        self.0.add(&other.0).expect("histograms share bounds");
    }

    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut buf)
            .expect("serialize into a Vec");
        base64::engine::general_purpose::STANDARD.encode(buf)
    }

    pub fn decode(text: &str) -> Result<Hist> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .context("histogram base64")?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
        let mut out = Hist::default();
        out.0.add(&h).context("histogram bounds")?;
        Ok(out)
    }

    pub fn summary(&self) -> Summary {
        let q = |q: f64| self.0.value_at_quantile(q);
        Summary {
            count: self.0.len(),
            mean_us: self.0.mean(),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.0.max(),
        }
    }
}

/// The figures of one histogram, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_merge_keeps_counts() {
        let mut a = Hist::default();
        for us in [10, 20, 30, 1000] {
            a.record_micros(us);
        }
        let b = Hist::decode(&a.encode()).unwrap();
        let mut c = Hist::default();
        c.merge(&a);
        c.merge(&b);
        assert_eq!(c.len(), 8);
        assert_eq!(c.summary().max_us, a.summary().max_us);
    }
}
