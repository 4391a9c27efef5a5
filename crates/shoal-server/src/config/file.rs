//! The TOML configuration file: its schema, how it goes under the environment and the
//! flags, and the checks of `shoal config check`.
//!
//! One schema (docs/gateway.md documents it key by key):
//! - `[node]`: every flag of the binary, same name with `_` for `-` (`ping_interval`,
//!   `trusted_proxies`, ...). A key set here is used unless its environment variable or
//!   flag is set: defaults < file < environment < flags.
//! - `[proxy]`: what every proxy to the app shares (the signing secret, timeout, answer
//!   size, requests in flight, headers passed, encoding).
//! - `[[namespaces]]`: per namespace (`name = "/chat"`) or per dynamic namespace
//!   (`pattern = "^/org-\\w+$"`): the connect, events and disconnect proxies.
//! - `[api]`: the HTTP publish API (its own listener, or a path on the node's).
//!
//! Unknown keys are errors; toml's messages carry the line, column and key.

use super::Config;
use clap::{parser::ValueSource, CommandFactory, FromArgMatches};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;

/// The whole file.
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeFile>,
    #[serde(default)]
    pub proxy: ProxyDefaults,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<NamespaceConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiConfig>,
}

/// `[node]`: the flags, by the names of their fields in [`Config`].
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_interval: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_payload: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transports: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_origins: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors_credentials: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_buffered_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attachments: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sessions_per_address: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshakes_per_address_per_second: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_loopback: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_eio3: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_burst: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnect_over_event_rate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rooms_per_socket: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_namespaces_per_session: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharded_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership_ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_ui: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_ui_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_ui_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_ui_password_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_ui_readonly: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_ui_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_ui_static: Option<String>,
    pub parser: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// How requests to the app are encoded.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// JSON; binary values as `{"$b64": "<base64>"}`.
    #[default]
    Json,
    /// The whole request as MessagePack (binary as `bin`); answers in JSON or MessagePack
    /// (by their `content-type`).
    Msgpack,
}

/// `[proxy]`: shared by every proxy; each proxy may override `timeout` and `max_body`.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyDefaults {
    /// HMAC-SHA256 key of the `x-shoal-signature` header. Required once a proxy is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Milliseconds the app has to answer one request (waiting for a free slot included).
    pub timeout: u64,
    /// Largest answer body accepted from the app, in bytes.
    pub max_body: usize,
    /// Requests in flight to the app per node and per kind (connect, event, disconnect).
    pub max_in_flight: usize,
    /// Events of one socket that may wait for their turn; past it an event is refused.
    pub max_queued_events: usize,
    /// Handshake headers passed to the connect proxy (lower case).
    pub headers: Vec<String>,
    pub encoding: Encoding,
}

impl Default for ProxyDefaults {
    fn default() -> Self {
        ProxyDefaults {
            secret: None,
            timeout: 5000,
            max_body: 64 * 1024,
            max_in_flight: 256,
            max_queued_events: 32,
            headers: vec!["cookie".into(), "authorization".into()],
            encoding: Encoding::Json,
        }
    }
}

/// `[[namespaces]]`: one static namespace (`name`) or a dynamic family (`pattern`).
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A regular expression over the whole namespace name, e.g. `^/org-[a-z0-9]+$`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectProxy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<EventsProxy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<DisconnectProxy>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ConnectProxy {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body: Option<usize>,
    /// Overrides `[proxy] headers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct EventsProxy {
    pub url: String,
    /// Event names sent to the app, or `["*"]` (the default) for every event.
    #[serde(default = "all_events")]
    pub names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body: Option<usize>,
    /// Overrides `[proxy] encoding`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

fn all_events() -> Vec<String> {
    vec!["*".into()]
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct DisconnectProxy {
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// `[api]`: the HTTP publish API.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Its own listener (e.g. `127.0.0.1:3100`); unset: `path` on the node's listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The prefix of its endpoints on the node's listener (`/api/emit`, ...).
    #[serde(default = "api_path")]
    pub path: String,
    /// Bearer tokens accepted in `authorization: Bearer <token>` (at least one).
    pub tokens: Vec<String>,
    /// Largest request body, in bytes.
    #[serde(default = "api_max_body")]
    pub max_body: usize,
    /// Milliseconds an emit with acks waits when the request names none.
    #[serde(default = "api_ack_timeout")]
    pub ack_timeout: u64,
}

fn api_path() -> String {
    "/api".into()
}
fn api_max_body() -> usize {
    1 << 20
}
fn api_ack_timeout() -> u64 {
    5000
}

/// The gateway's part of the configuration (the file's sections other than `[node]`),
/// checked.
#[derive(Clone, Debug, Default)]
pub struct GatewayConfig {
    pub proxy: ProxyDefaults,
    pub namespaces: Vec<NamespaceConfig>,
    pub api: Option<ApiConfig>,
}

impl GatewayConfig {
    /// True if the node runs as a gateway (any proxy or the API configured): the demo's
    /// handlers are not installed then.
    pub fn enabled(&self) -> bool {
        !self.namespaces.is_empty() || self.api.is_some()
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// Bad flags or environment (clap's own message and exit code).
    Flags(clap::Error),
    /// The file: unreadable, malformed, or with a bad value.
    File(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Flags(e) => e.fmt(f),
            LoadError::File(e) => f.write_str(e),
        }
    }
}

impl LoadError {
    /// Prints the error and exits (status 2, as clap does for usage errors).
    pub fn exit(self) -> ! {
        match self {
            LoadError::Flags(e) => e.exit(),
            LoadError::File(e) => {
                eprintln!("error: {e}");
                std::process::exit(2)
            }
        }
    }
}

/// Reads and checks a configuration file: syntax, types, unknown keys (with line and
/// key), then the values toml cannot check (regexes, URLs, required secrets).
pub fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// [`read_file`] on text.
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    let file: FileConfig = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => format!("{}: {}", locate(text, span.start), e.to_string().trim_end()),
        None => e.to_string().trim_end().to_owned(),
    })?;
    check_gateway(&file)?;
    Ok(file)
}

fn check_gateway(file: &FileConfig) -> Result<(), String> {
    let p = &file.proxy;
    if p.timeout == 0 || p.max_body == 0 || p.max_in_flight == 0 || p.max_queued_events == 0 {
        return Err("[proxy]: timeout, max_body, max_in_flight and max_queued_events must be above 0".into());
    }
    let mut any_proxy = false;
    let mut names = std::collections::HashSet::new();
    for (i, ns) in file.namespaces.iter().enumerate() {
        let at = format!("namespaces[{i}]");
        match (&ns.name, &ns.pattern) {
            (Some(name), None) => {
                if !name.starts_with('/') {
                    return Err(format!("{at}.name: a namespace starts with `/` (got {name:?})"));
                }
                // Twice would mean two middlewares and two handlers: every connect and
                // event sent to the app twice (the node refuses it at start too).
                if !names.insert(name.as_str()) {
                    return Err(format!("{at}.name: {name:?} is configured twice"));
                }
            }
            (None, Some(pattern)) => {
                regex::Regex::new(pattern).map_err(|e| format!("{at}.pattern: {e}"))?;
            }
            _ => return Err(format!("{at}: set exactly one of `name` and `pattern`")),
        }
        let urls = [
            ns.connect.as_ref().map(|c| ("connect", &c.url, c.timeout)),
            ns.events.as_ref().map(|c| ("events", &c.url, c.timeout)),
            ns.disconnect.as_ref().map(|c| ("disconnect", &c.url, c.timeout)),
        ];
        for (kind, url, timeout) in urls.into_iter().flatten() {
            any_proxy = true;
            check_url(url).map_err(|e| format!("{at}.{kind}.url: {e}"))?;
            if timeout == Some(0) {
                return Err(format!("{at}.{kind}.timeout: must be above 0"));
            }
        }
        let bodies = [ns.connect.as_ref().map(|c| ("connect", c.max_body)), ns.events.as_ref().map(|e| ("events", e.max_body))];
        for (kind, max_body) in bodies.into_iter().flatten() {
            if max_body == Some(0) {
                return Err(format!("{at}.{kind}.max_body: must be above 0 (every answer with a body would be too large)"));
            }
        }
        if let Some(events) = &ns.events {
            if events.names.is_empty() {
                return Err(format!("{at}.events.names: list at least one event, or \"*\""));
            }
        }
    }
    if any_proxy && p.secret.as_deref().is_none_or(str::is_empty) {
        return Err("[proxy].secret: required when a proxy is configured (requests to the app are signed with it)".into());
    }
    if let Some(api) = &file.api {
        if api.tokens.is_empty() || api.tokens.iter().any(|t| t.is_empty()) {
            return Err("[api].tokens: list at least one non-empty bearer token".into());
        }
        if api.listen.is_none() && (!api.path.starts_with('/') || api.path.len() < 2) {
            return Err(format!("[api].path: a path such as \"/api\" (got {:?})", api.path));
        }
    }
    Ok(())
}

/// `line 3, key node.ping_interval` for a byte offset in the file.
fn locate(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let section = before
        .lines()
        .filter_map(|l| l.trim().strip_prefix('[').map(|l| l.trim_start_matches('[').trim_end().trim_end_matches(']').trim()))
        .last();
    match line.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.starts_with('[')) {
        Some(key) => match section {
            Some(section) => format!("line {line_no}, key {section}.{key}"),
            None => format!("line {line_no}, key {key}"),
        },
        None => format!("line {line_no}"),
    }
}

/// The line of `key` in the `[node]` section, for errors found after parsing.
fn node_key_line(text: &str, key: &str) -> Option<usize> {
    let mut in_node = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_node = t == "[node]";
        } else if in_node && t.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
            return Some(i + 1);
        }
    }
    None
}

/// Proxies speak plain HTTP/1.1 to the app (put it next to the node, or behind a local
/// TLS terminator).
fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!("{url:?}: an http:// URL with a host"));
    }
    Ok(())
}

impl Config {
    /// The configuration from `args` (the first is the program name), the environment
    /// and, with `--config`, its file: defaults < file < environment < flags.
    pub fn load<I, T>(args: I) -> Result<Config, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let command = || Config::command().args_override_self(true);
        let matches = command().try_get_matches_from(&args).map_err(LoadError::Flags)?;
        let first = Config::from_arg_matches(&matches).map_err(LoadError::Flags)?;
        let Some(path) = first.config.clone() else { return Ok(first) };
        let file = read_file(&path).map_err(LoadError::File)?;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let from_file = node_args(file.node.as_ref(), &matches).map_err(LoadError::File)?;
        let mut merged = Config::from_arg_matches(&if from_file.is_empty() {
            matches
        } else {
            // The file's values go first, as flags; the real flags come after them. Only
            // keys that neither a flag nor the environment set are passed.
            let mut all = vec![args.first().cloned().unwrap_or_else(|| "shoal".into())];
            all.extend(from_file);
            all.extend(args.iter().skip(1).cloned());
            command()
                .try_get_matches_from(&all)
                .map_err(|e| {
                    let key = e.get(clap::error::ContextKind::InvalidArg).map(|a| a.to_string()).and_then(|a| {
                        a.trim_start_matches("--").split(' ').next().map(|k| k.replace('-', "_"))
                    });
                    let at = match key.as_deref().and_then(|k| node_key_line(&text, k).map(|l| (k, l))) {
                        Some((k, line)) => format!("line {line}, key node.{k}"),
                        None => "[node]".to_owned(),
                    };
                    LoadError::File(format!("{}: {at}: {}", path.display(), clap_message(&e)))
                })?
        })
        .map_err(LoadError::Flags)?;
        merged.gateway = GatewayConfig { proxy: file.proxy, namespaces: file.namespaces, api: file.api };
        Ok(merged)
    }

    /// The effective configuration as TOML, secrets masked (`shoal config print`).
    pub fn to_toml(&self) -> String {
        let node = NodeFile {
            listen: Some(self.listen.to_string()),
            path: Some(self.path.clone()),
            ping_interval: Some(self.ping_interval),
            ping_timeout: Some(self.ping_timeout),
            max_payload: Some(self.max_payload as u64),
            connect_timeout: Some(self.connect_timeout),
            transports: Some(self.transports.split(',').map(|t| t.trim().to_owned()).collect()),
            cors_origins: Some(self.cors_origins.clone()),
            cors_credentials: Some(self.cors_credentials),
            max_header_bytes: Some(self.max_header_bytes),
            max_buffered_bytes: Some(self.max_buffered_bytes as u64),
            max_connections: Some(self.max_connections),
            max_sessions: Some(self.max_sessions),
            request_body_timeout: Some(self.request_body_timeout),
            max_attachments: Some(self.max_attachments),
            max_sessions_per_address: Some(self.max_sessions_per_address as u64),
            handshakes_per_address_per_second: Some(self.handshakes_per_address_per_second as u64),
            limit_loopback: Some(self.limit_loopback),
            allow_eio3: Some(self.allow_eio3),
            events_per_second: Some(self.events_per_second as u64),
            event_burst: Some(self.event_burst as u64),
            disconnect_over_event_rate: Some(self.disconnect_over_event_rate),
            max_rooms_per_socket: Some(self.max_rooms_per_socket as u64),
            max_namespaces_per_session: Some(self.max_namespaces_per_session as u64),
            node_id: self.node_id.clone(),
            redis: self.redis.as_deref().map(mask_url),
            redis_key: Some(self.redis_key.clone()),
            adapter: Some(self.adapter.clone()),
            sharded_mode: Some(self.sharded_mode.clone()),
            requests_timeout: Some(self.requests_timeout),
            advertise: self.advertise.clone(),
            trusted_proxies: Some(self.trusted_proxies.clone()),
            proxy_protocol: Some(self.proxy_protocol),
            membership_ttl: Some(self.membership_ttl),
            recovery: Some(self.recovery),
            admin_ui: Some(self.admin_ui),
            admin_ui_namespace: Some(self.admin_ui_namespace.clone()),
            admin_ui_username: self.admin_ui_username.clone(),
            // A hash, but still what a password guesser would start from.
            admin_ui_password_hash: self.admin_ui_password_hash.as_ref().map(|_| MASK.to_owned()),
            admin_ui_readonly: Some(self.admin_ui_readonly),
            admin_ui_mode: Some(self.admin_ui_mode.clone()),
            admin_ui_static: self.admin_ui_static.as_ref().map(|p| p.display().to_string()),
            parser: Some(self.parser.name().to_owned()),
            log: Some(self.log.clone()),
        };
        let mut proxy = self.gateway.proxy.clone();
        proxy.secret = proxy.secret.map(|_| MASK.to_owned());
        let api = self.gateway.api.clone().map(|mut api| {
            api.tokens = api.tokens.iter().map(|_| MASK.to_owned()).collect();
            api
        });
        let file = FileConfig { node: Some(node), proxy, namespaces: self.gateway.namespaces.clone(), api };
        toml::to_string_pretty(&file).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

const MASK: &str = "********";

/// `redis://user:secret@host` → `redis://user:********@host` (see
/// [`shoal::adapter::redis::masked_url`]).
pub(crate) fn mask_url(url: &str) -> String {
    shoal::adapter::redis::masked_url(url)
}

/// The `[node]` keys that neither a flag nor the environment set, as flags.
fn node_args(node: Option<&NodeFile>, matches: &clap::ArgMatches) -> Result<Vec<OsString>, String> {
    let Some(node) = node else { return Ok(vec![]) };
    let table = toml::Table::try_from(node).map_err(|e| e.to_string())?;
    let mut args = Vec::new();
    for (key, value) in table {
        let set_elsewhere = matches!(matches.value_source(&key), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        if set_elsewhere {
            continue;
        }
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            toml::Value::Boolean(true) => args.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::Integer(n) => args.extend([flag.into(), n.to_string().into()]),
            toml::Value::String(s) => args.extend([flag.into(), s.into()]),
            toml::Value::Array(items) => {
                if items.is_empty() {
                    continue;
                }
                let list: Vec<String> = items.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect();
                args.extend([flag.into(), list.join(",").into()]);
            }
            other => return Err(format!("[node].{key}: unexpected value {other}")),
        }
    }
    Ok(args)
}

/// clap's first line, without its usage footer, for errors in the file's values.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    text.lines().next().unwrap_or("").trim_start_matches("error: ").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("shoal-config-test-{}-{name}.toml", std::process::id()));
        std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
        path
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::load(["shoal"]).unwrap();
        assert_eq!(c.ping_interval, 25_000);
        assert_eq!(c.path, "/socket.io/");
        assert!(!c.gateway.enabled());
    }

    #[test]
    fn the_file_sets_what_flags_leave_unset_and_flags_win() {
        let path = write_temp(
            "merge",
            r#"
[node]
ping_interval = 1000
ping_timeout = 2000
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]
proxy_protocol = true
node_id = "from-file"
"#,
        );
        let c = Config::load(["shoal".as_ref(), "--config".as_ref(), path.as_os_str(), "--ping-timeout".as_ref(), "3000".as_ref()]).unwrap();
        assert_eq!(c.ping_interval, 1000, "from the file");
        assert_eq!(c.ping_timeout, 3000, "the flag wins over the file");
        assert_eq!(c.trusted_proxies, vec!["127.0.0.1", "10.0.0.0/8"]);
        assert!(c.proxy_protocol);
        assert_eq!(c.node_id.as_deref(), Some("from-file"));
        assert_eq!(c.max_payload, 1_000_000, "a default where neither sets it");
    }

    #[test]
    fn allow_eio3_is_off_unless_the_file_or_the_flag_sets_it() {
        assert!(!Config::load(["shoal"]).unwrap().allow_eio3);
        assert!(Config::load(["shoal", "--allow-eio3"]).unwrap().allow_eio3);
        let path = write_temp("eio3", "[node]\nallow_eio3 = true\n");
        let c = Config::load(["shoal".as_ref(), "--config".as_ref(), path.as_os_str()]).unwrap();
        assert!(c.allow_eio3);
        assert!(c.to_toml().contains("allow_eio3 = true"));
    }

    #[test]
    fn the_parser_comes_from_the_file_or_a_flag_and_a_bad_one_names_its_line() {
        assert_eq!(Config::load(["shoal"]).unwrap().parser, shoal::Parser::Json);
        let path = write_temp("parser", "[node]\nparser = \"msgpack\"\n");
        let c = Config::load(["shoal".as_ref(), "--config".as_ref(), path.as_os_str()]).unwrap();
        assert_eq!(c.parser, shoal::Parser::MsgPack);
        assert!(c.to_toml().contains("parser = \"msgpack\""), "{}", c.to_toml());
        let c = Config::load(["shoal".as_ref(), "--config".as_ref(), path.as_os_str(), "--parser".as_ref(), "json".as_ref()]).unwrap();
        assert_eq!(c.parser, shoal::Parser::Json, "the flag wins over the file");
        let bad = write_temp("bad-parser", "[node]\n\nparser = \"cbor\"\n");
        let e = Config::load(["shoal".as_ref(), "--config".as_ref(), bad.as_os_str()]).unwrap_err().to_string();
        assert!(e.contains("line 3, key node.parser") && e.contains("cbor"), "{e}");
        assert!(Config::load(["shoal", "--parser", "cbor"]).is_err());
    }

    #[test]
    fn the_adapter_and_its_mode_come_from_the_file_and_are_checked() {
        let path = write_temp(
            "sharded",
            "[node]\nredis = \"redis+cluster://127.0.0.1:7000,127.0.0.1:7001\"\nadapter = \"sharded\"\nsharded_mode = \"dynamic-private\"\n",
        );
        let c = Config::load(["shoal".as_ref(), "--config".as_ref(), path.as_os_str()]).unwrap();
        assert_eq!((c.adapter.as_str(), c.sharded_mode.as_str()), ("sharded", "dynamic-private"));
        let c = Config::load(["shoal"]).unwrap();
        assert_eq!((c.adapter.as_str(), c.sharded_mode.as_str()), ("classic", "dynamic"));
        assert!(Config::load(["shoal", "--adapter", "sticky"]).is_err());
        assert!(Config::load(["shoal", "--sharded-mode", "sometimes"]).is_err());
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        // The only test that sets SHOAL_REDIS_KEY.
        let path = write_temp("env", "[node]\nredis_key = \"file-key\"\n");
        std::env::set_var("SHOAL_REDIS_KEY", "env-key");
        let c = Config::load(["shoal".as_ref(), "--config".as_ref(), path.as_os_str()]);
        std::env::remove_var("SHOAL_REDIS_KEY");
        assert_eq!(c.unwrap().redis_key, "env-key");
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_key() {
        let e = parse_file("[node]\nping_interval = 1000\npong_interval = 5\n").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("pong_interval"), "{e}");
        let e = parse_file("[proxy]\nsecret = \"s\"\n[nope]\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("nope"), "{e}");
    }

    #[test]
    fn malformed_toml_and_wrong_types_name_the_line() {
        let e = parse_file("[node]\nlisten = \"127.0.0.1:3000\"\nping_interval = = 3\n").unwrap_err();
        assert!(e.contains("line 3, key node.ping_interval"), "{e}");
        let e = parse_file("[node]\n\nping_interval = \"soon\"\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("ping_interval"), "{e}");
    }

    #[test]
    fn values_out_of_range_name_the_key() {
        let path = write_temp("range", "[node]\nmembership_ttl = 10\n");
        let e = Config::load(["shoal".as_ref(), "--config".as_ref(), path.as_os_str()]).unwrap_err().to_string();
        assert!(e.contains("line 2, key node.membership_ttl"), "{e}");
    }

    /// The four limits that were builder options only: a flag, a `[node]` key, printed,
    /// checked, and given to the library (start and serve_options).
    #[tokio::test]
    async fn connection_session_body_and_attachment_limits_are_flags_and_keys() {
        let c = Config::load(["shoal"]).unwrap();
        assert_eq!(
            (c.max_connections, c.max_sessions, c.request_body_timeout, c.max_attachments),
            (100_000, 100_000, 10_000, 10),
            "the library's defaults"
        );
        let path = write_temp(
            "limits",
            "[node]\nmax_connections = 500\nmax_sessions = 400\nrequest_body_timeout = 2500\nmax_attachments = 3\n",
        );
        let c = Config::load(["shoal".as_ref(), "--config".as_ref(), path.as_os_str(), "--max-sessions".as_ref(), "300".as_ref()]).unwrap();
        assert_eq!((c.max_connections, c.max_sessions, c.request_body_timeout, c.max_attachments), (500, 300, 2500, 3));
        let text = c.to_toml();
        for line in ["max_connections = 500\n", "max_sessions = 300\n", "request_body_timeout = 2500\n", "max_attachments = 3\n"] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
        parse_file(&text).unwrap();
        let io = c.start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_eq!(c.serve_options(&io).max_connections, 500);
        let engine = io.engine().config();
        assert_eq!((engine.max_sessions, engine.request_body_timeout), (300, std::time::Duration::from_millis(2500)));

        for (key, bad) in [("max_connections", "0"), ("max_sessions", "0"), ("request_body_timeout", "0"), ("max_attachments", "1000000")] {
            let path = write_temp(&format!("bad-{key}"), &format!("[node]\n\n{key} = {bad}\n"));
            let e = Config::load(["shoal".as_ref(), "--config".as_ref(), path.as_os_str()]).unwrap_err().to_string();
            assert!(e.contains(&format!("line 3, key node.{key}")), "{key} = {bad}: {e}");
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(Config::load(["shoal", flag.as_str(), bad]).is_err(), "{flag} {bad} accepted");
        }
        assert_eq!(Config::load(["shoal", "--max-attachments", "0"]).unwrap().max_attachments, 0, "0: no binary packets at all");
    }

    #[test]
    fn gateway_sections() {
        let file = parse_file(
            r#"
[proxy]
secret = "s3cret"
timeout = 1500

[[namespaces]]
name = "/"
connect = { url = "http://127.0.0.1:4000/connect", headers = ["cookie"] }
events = { url = "http://127.0.0.1:4000/event", names = ["chat", "join"] }
disconnect = { url = "http://127.0.0.1:4000/disconnect" }

[[namespaces]]
pattern = "^/org-[a-z]+$"
events = { url = "http://127.0.0.1:4000/event", encoding = "msgpack" }

[api]
tokens = ["t1"]
"#,
        )
        .unwrap();
        assert_eq!(file.proxy.timeout, 1500);
        assert_eq!(file.proxy.max_body, 64 * 1024, "default");
        assert_eq!(file.namespaces[0].events.as_ref().unwrap().names, vec!["chat", "join"]);
        assert_eq!(file.namespaces[1].events.as_ref().unwrap().names, vec!["*"], "default: every event");
        assert_eq!(file.namespaces[1].events.as_ref().unwrap().encoding, Some(Encoding::Msgpack));
        assert_eq!(file.api.as_ref().unwrap().path, "/api");
    }

    #[test]
    fn gateway_checks() {
        let ns = "[[namespaces]]\nname = \"/\"\nevents = { url = \"http://127.0.0.1:4000/e\" }\n";
        assert!(parse_file(ns).unwrap_err().contains("secret"), "a proxy needs the secret");
        let e = parse_file("[proxy]\nsecret = \"s\"\n[[namespaces]]\npattern = \"(\"\n").unwrap_err();
        assert!(e.contains("namespaces[0].pattern"), "{e}");
        let e = parse_file("[proxy]\nsecret = \"s\"\n[[namespaces]]\nname = \"/\"\npattern = \"x\"\n").unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        let e = parse_file("[proxy]\nsecret = \"s\"\n[[namespaces]]\nname = \"/\"\nconnect = { url = \"https://x/c\" }\n").unwrap_err();
        assert!(e.contains("namespaces[0].connect.url"), "{e}");
        assert!(parse_file("[api]\ntokens = []\n").unwrap_err().contains("tokens"));
        let twice = "[proxy]\nsecret = \"s\"\n[[namespaces]]\nname = \"/chat\"\n[[namespaces]]\nname = \"/chat\"\n";
        assert_eq!(parse_file(twice).unwrap_err(), "namespaces[1].name: \"/chat\" is configured twice");
        let zero = "[proxy]\nsecret = \"s\"\n[[namespaces]]\nname = \"/\"\nevents = { url = \"http://127.0.0.1:4000/e\", names = [\"*\"], max_body = 0 }\n";
        let e = parse_file(zero).unwrap_err();
        assert!(e.starts_with("namespaces[0].events.max_body: must be above 0"), "{e}");
    }

    #[test]
    fn print_masks_secrets() {
        let path = write_temp(
            "print",
            "[node]\nredis = \"redis://:hunter2@127.0.0.1:6379\"\n[proxy]\nsecret = \"hunter2\"\n[api]\ntokens = [\"hunter2\"]\n",
        );
        let c = Config::load(["shoal".as_ref(), "--config".as_ref(), path.as_os_str()]).unwrap();
        let text = c.to_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis://:********@127.0.0.1:6379"), "{text}");
        // What it prints is a valid file again.
        parse_file(&text).unwrap();
    }

    #[test]
    fn sentinel_urls_are_checked_and_masked() {
        let url = "redis+sentinel://app:hunter2@10.0.0.1:26379,10.0.0.2:26379/mymaster/2?sentinel_password=hunter3";
        let path = write_temp("sentinel", &format!("[node]\nredis = \"{url}\"\n"));
        let c = Config::load(["shoal".as_ref(), "--config".as_ref(), path.as_os_str()]).unwrap();
        c.validate().unwrap();
        let text = c.to_toml();
        assert!(!text.contains("hunter"), "{text}");
        assert!(
            text.contains("redis+sentinel://app:********@10.0.0.1:26379,10.0.0.2:26379/mymaster/2?sentinel_password=********"),
            "{text}"
        );
        let path = write_temp("sentinel-bad", "[node]\nredis = \"redis+sentinel://10.0.0.1:26379\"\n");
        let c = Config::load(["shoal".as_ref(), "--config".as_ref(), path.as_os_str()]).unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("redis (--redis)") && e.contains("no master name"), "{e}");
    }
}
