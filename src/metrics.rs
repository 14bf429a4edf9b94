//! Metrics: request counts and latency histograms -> Prometheus text for `/metrics`.
//!
//! Lock-free histograms per search stage (analyze, encode, retrieve, rank, total) and per
//! HTTP route; request counts by route and status; error counts by error code.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket upper bounds, seconds.
const BOUNDS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Search pipeline stages with a latency histogram.
pub const STAGES: &[&str] = &["analyze", "encode", "retrieve", "rank", "total"];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, b) in BOUNDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// All metrics of one process.
#[derive(Default)]
pub struct Metrics {
    stages: [Histogram; 5],
    routes: Mutex<BTreeMap<String, Histogram>>,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    searches: AtomicU64,
    no_match: AtomicU64,
}

impl Metrics {
    /// Records the time of a search stage (one of [`STAGES`]).
    pub fn observe_stage(&self, stage: &str, d: Duration) {
        if let Some(i) = STAGES.iter().position(|s| *s == stage) {
            self.stages[i].observe(d);
        }
    }

    /// Records one HTTP request.
    pub fn observe_request(&self, route: &str, status: u16, d: Duration) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.entry(route.to_string()).or_default().observe(d);
        drop(routes);
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests.entry((route.to_string(), status)).or_default() += 1;
    }

    /// Counts a search, and whether nothing matched it.
    pub fn count_search(&self, no_match: bool) {
        self.searches.fetch_add(1, Ordering::Relaxed);
        if no_match {
            self.no_match.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an error by its code.
    pub fn count_error(&self, code: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP shoprank_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE shoprank_requests_total counter\n");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "shoprank_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP shoprank_errors_total Errors by code.\n# TYPE shoprank_errors_total counter\n",
        );
        for (code, n) in self.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "shoprank_errors_total{{code=\"{code}\"}} {n}");
        }
        let (searches, no_match) = (
            self.searches.load(Ordering::Relaxed),
            self.no_match.load(Ordering::Relaxed),
        );
        let rate = if searches > 0 {
            no_match as f64 / searches as f64
        } else {
            0.0
        };
        let _ = write!(
            out,
            "# HELP shoprank_searches_total Searches answered.\n\
             # TYPE shoprank_searches_total counter\nshoprank_searches_total {searches}\n\
             # HELP shoprank_searches_no_match_total Searches that matched no product.\n\
             # TYPE shoprank_searches_no_match_total counter\n\
             shoprank_searches_no_match_total {no_match}\n\
             # HELP shoprank_zero_result_rate Share of searches that matched no product, \
             since start.\n# TYPE shoprank_zero_result_rate gauge\n\
             shoprank_zero_result_rate {rate}\n"
        );
        out.push_str("# HELP shoprank_request_duration_seconds HTTP request latency by route.\n");
        out.push_str("# TYPE shoprank_request_duration_seconds histogram\n");
        for (route, h) in self.routes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            h.render(
                &mut out,
                "shoprank_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        out.push_str("# HELP shoprank_search_stage_seconds Search latency by pipeline stage.\n");
        out.push_str("# TYPE shoprank_search_stage_seconds histogram\n");
        for (stage, h) in STAGES.iter().zip(&self.stages) {
            h.render(
                &mut out,
                "shoprank_search_stage_seconds",
                &format!("stage=\"{stage}\""),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cumulative_buckets() {
        let m = Metrics::default();
        m.observe_stage("rank", Duration::from_micros(300));
        m.observe_stage("rank", Duration::from_millis(7));
        m.observe_request("/search", 200, Duration::from_millis(3));
        m.count_error("invalid_query");
        let text = m.render();
        assert!(
            text.contains("shoprank_search_stage_seconds_bucket{stage=\"rank\",le=\"0.0005\"} 1")
        );
        assert!(text.contains("shoprank_search_stage_seconds_bucket{stage=\"rank\",le=\"0.01\"} 2"));
        assert!(text.contains("shoprank_search_stage_seconds_count{stage=\"rank\"} 2"));
        assert!(text.contains("shoprank_requests_total{route=\"/search\",status=\"200\"} 1"));
        assert!(text.contains("shoprank_errors_total{code=\"invalid_query\"} 1"));
    }
}
