//! The audit log's Prometheus metrics.

use prometheus::{IntCounter, IntGauge, Registry};

/// Counters and the queue gauge of the audit log, registered on the server's registry.
#[derive(Debug, Clone)]
pub struct AuditMetrics {
    /// `careguard_audit_records_written_total`: records appended to a segment.
    pub records_written: IntCounter,
    /// `careguard_audit_bytes_written_total`: bytes appended to segments.
    pub bytes_written: IntCounter,
    /// `careguard_audit_queue_depth`: exchanges waiting for the writer.
    pub queue_depth: IntGauge,
    /// `careguard_audit_write_errors_total`: failed writes, fsyncs, rotations (each loses the record).
    pub write_errors: IntCounter,
    /// `careguard_audit_records_dropped_total`: exchanges not logged because the queue was full.
    pub records_dropped: IntCounter,
}

impl AuditMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.records_written.clone()))?;
        registry.register(Box::new(metrics.bytes_written.clone()))?;
        registry.register(Box::new(metrics.queue_depth.clone()))?;
        registry.register(Box::new(metrics.write_errors.clone()))?;
        registry.register(Box::new(metrics.records_dropped.clone()))?;
        Ok(metrics)
    }

    /// Creates the metrics without registering them (tests, tools).
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(Self {
            records_written: IntCounter::new(
                "careguard_audit_records_written_total",
                "Audit records appended to a segment file.",
            )?,
            bytes_written: IntCounter::new(
                "careguard_audit_bytes_written_total",
                "Bytes appended to audit segment files.",
            )?,
            queue_depth: IntGauge::new(
                "careguard_audit_queue_depth",
                "Exchanges waiting to be written to the audit log.",
            )?,
            write_errors: IntCounter::new(
                "careguard_audit_write_errors_total",
                "Audit writes, fsyncs or segment rotations that failed.",
            )?,
            records_dropped: IntCounter::new(
                "careguard_audit_records_dropped_total",
                "Exchanges not logged because the audit queue was full.",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_the_five_names() {
        let registry = Registry::new();
        let m = AuditMetrics::register(&registry).unwrap();
        m.records_dropped.inc();
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert_eq!(names.len(), 5);
        assert!(names.contains(&"careguard_audit_records_dropped_total".to_string()));
        assert!(
            AuditMetrics::register(&registry).is_err(),
            "twice on one registry is an error"
        );
    }
}
