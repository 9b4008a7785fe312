//! `/metrics` of every binary in the Prometheus text format, written by the Prometheus
//! project's client (`prometheus-client`). A binary reads its counters of the moment into
//! [`Readings`]; the client writes the families, their help, types and labels.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The content type of [`Readings::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Clone, Debug)]
struct Reading {
    name: String,
    help: &'static str,
    kind: Kind,
    labels: Vec<(String, String)>,
    value: u64,
}

/// Readings of one moment, in the order they are added; readings of one name are one family.
#[derive(Clone, Debug, Default)]
pub struct Readings {
    prefix: String,
    readings: Vec<Reading>,
}

impl Readings {
    /// Readings whose names all start with `prefix_` (`kakuremichi_gateway`).
    pub fn new(prefix: &str) -> Self {
        Readings {
            prefix: prefix.to_string(),
            readings: Vec::new(),
        }
    }

    /// A counter; its name without `_total`, which the format adds.
    pub fn counter(&mut self, name: &str, help: &'static str, value: u64) -> &mut Self {
        self.push(Kind::Counter, name, help, Vec::new(), value)
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &'static str, value: u64) -> &mut Self {
        self.push(Kind::Gauge, name, help, Vec::new(), value)
    }

    /// One labelled sample of a counter family.
    pub fn counter_with(
        &mut self,
        name: &str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) -> &mut Self {
        self.push(Kind::Counter, name, help, owned(labels), value)
    }

    /// One labelled sample of a gauge family.
    pub fn gauge_with(
        &mut self,
        name: &str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) -> &mut Self {
        self.push(Kind::Gauge, name, help, owned(labels), value)
    }

    fn push(
        &mut self,
        kind: Kind,
        name: &str,
        help: &'static str,
        labels: Vec<(String, String)>,
        value: u64,
    ) -> &mut Self {
        self.readings.push(Reading {
            name: format!("{}_{name}", self.prefix),
            help,
            kind,
            labels,
            value,
        });
        self
    }

    /// The exposition text (OpenMetrics, which Prometheus reads; see [`CONTENT_TYPE`]).
    pub fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

impl Collector for Readings {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut done: Vec<&str> = Vec::new();
        for first in &self.readings {
            if done.contains(&first.name.as_str()) {
                continue;
            }
            done.push(&first.name);
            let family = self.readings.iter().filter(|r| r.name == first.name);
            let metric_type = match first.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut metric =
                encoder.encode_descriptor(&first.name, first.help, None, metric_type)?;
            for reading in family {
                // A sample without labels is written bare, not with `{}`.
                match reading.labels.is_empty() {
                    true => write_value(reading, &mut metric)?,
                    false => write_value(reading, &mut metric.encode_family(&reading.labels)?)?,
                }
            }
        }
        Ok(())
    }
}

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write_value(reading: &Reading, sample: &mut MetricEncoder) -> Result<(), std::fmt::Error> {
    match reading.kind {
        Kind::Counter => sample.encode_counter::<NoLabelSet, _, u64>(&reading.value, None),
        Kind::Gauge => sample.encode_gauge(&i64::try_from(reading.value).unwrap_or(i64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_written_once_with_their_labels_and_types() {
        let mut readings = Readings::new("kakuremichi_test");
        readings
            .counter("requests", "Requests answered.", 7)
            .gauge("sessions", "Open sessions.", 3)
            .counter_with("dropped", "Datagrams refused.", &[("reason", "short")], 1)
            .counter_with("dropped", "Datagrams refused.", &[("reason", "mac")], 2);
        let text = readings.encode();
        assert!(
            text.contains("# TYPE kakuremichi_test_requests counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\nkakuremichi_test_requests_total 7\n"),
            "{text}"
        );
        assert!(text.contains("\nkakuremichi_test_sessions 3\n"), "{text}");
        assert!(text.contains("kakuremichi_test_dropped_total{reason=\"short\"} 1\n"));
        assert!(text.contains("kakuremichi_test_dropped_total{reason=\"mac\"} 2\n"));
        assert_eq!(text.matches("# TYPE kakuremichi_test_dropped").count(), 1);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
