//! The gateway's metrics, registered with the node's (`Server::register_metrics`), so
//! they appear in `/metrics` next to the library's:
//! - `shoal_gateway_proxy_requests_total{proxy}`, `shoal_gateway_proxy_errors_total{proxy,error}`,
//!   `shoal_gateway_proxy_latency_seconds{proxy}` (connect, event, disconnect); `error` is an
//!   `AppError` code, or `queue_full` for an event refused before any request (its socket's
//!   queue was full); `requests` and `latency` count only requests sent (not those refused
//!   `app_overloaded` for want of a slot);
//! - `shoal_gateway_api_requests_total{method,status}`, `shoal_gateway_api_latency_seconds{method}`.

use shoal::prometheus_client::metrics::counter::Counter;
use shoal::prometheus_client::metrics::family::Family;
use shoal::prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use shoal::prometheus_client::registry::Registry;

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];
type HistogramFamily = Family<Labels1, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

#[derive(Clone)]
pub struct GatewayMetrics {
    pub proxy_requests: Family<Labels1, Counter>,
    pub proxy_errors: Family<Labels2, Counter>,
    pub proxy_latency: HistogramFamily,
    pub api_requests: Family<Labels2, Counter>,
    pub api_latency: HistogramFamily,
}

impl GatewayMetrics {
    pub fn new() -> GatewayMetrics {
        GatewayMetrics {
            proxy_requests: Family::default(),
            proxy_errors: Family::default(),
            proxy_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            api_requests: Family::default(),
            api_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        r.register("shoal_gateway_proxy_requests", "Requests to the app, by proxy", self.proxy_requests.clone());
        r.register("shoal_gateway_proxy_errors", "Requests to the app that failed, by proxy and error", self.proxy_errors.clone());
        r.register("shoal_gateway_proxy_latency_seconds", "Time to the app's answer, by proxy", self.proxy_latency.clone());
        r.register("shoal_gateway_api_requests", "Requests to the publish API, by method and status", self.api_requests.clone());
        r.register("shoal_gateway_api_latency_seconds", "Time to answer the publish API, by method", self.api_latency.clone());
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics::new()
    }
}
