//! Builds `socket.handshake` from the Engine.IO handshake request. The record itself
//! belongs to the adapter (it crosses nodes in `fetch_sockets`); it is re-exported here
//! so that `shoal::Handshake` names it.

pub use crate::adapter::Handshake;
use crate::engine::HandshakeRequest;
use crate::protocol::Value;
use indexmap::IndexMap;
use std::time::{SystemTime, UNIX_EPOCH};

impl Handshake {
    pub(crate) fn new(req: &HandshakeRequest, auth: Value) -> Handshake {
        let mut headers: IndexMap<String, String> = IndexMap::new();
        for (name, value) in req.headers.iter() {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        let query: IndexMap<String, String> =
            form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let issued = req.issued.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let ip = match req.address.ip() {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(std::net::IpAddr::V6(v6)),
            v4 => v4,
        };
        Handshake {
            xdomain: req.headers.contains_key(http::header::ORIGIN),
            headers,
            time: js_date_string(req.issued),
            address: ip.to_string(),
            secure: req.secure,
            issued,
            url: req.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default(),
            query,
            auth,
        }
    }
}

/// (year, month 1-12, day 1-31) of the day `days` after 1970-01-01 (Howard Hinnant's
/// algorithm), for the dates the handshake and the admin UI's reports carry.
pub(crate) fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `Wed Nov 25 2026 17:04:00 GMT+0000 (Coordinated Universal Time)`.
fn js_date_string(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_date(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{} {} {:02} {} {:02}:{:02}:{:02} GMT+0000 (Coordinated Universal Time)",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        year,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_dates_like_javascript() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_626_240);
        assert_eq!(super::js_date_string(t), "Wed Nov 25 2026 17:04:00 GMT+0000 (Coordinated Universal Time)");
        assert_eq!(super::js_date_string(std::time::UNIX_EPOCH), "Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)");
    }
}
