//! An intercept's HTTP filter: which requests a personal intercept takes.
//!
//! The wire form is [`FilterSpec`], the strings the user typed (`--http-header x-session=dev-1`,
//! `--http-path-prefix /api`). It is compiled once, at the boundary, into a [`Filter`] with
//! `TryFrom`; matching a request then neither parses nor allocates (except for a header sent on
//! several field lines, see below).
//!
//! # Matching
//! A filter is a conjunction: a request matches when it satisfies every constraint.
//! - **Header `NAME=VALUE`**: the request's value of `NAME` is exactly `VALUE`, byte for byte
//!   (names are case-insensitive, values are not). A header sent on several field lines has, as
//!   RFC 9110 §5.3 says, the value of those lines joined with `", "`; so every request has at most
//!   one value per name. `host` falls back to the URI's authority, which is where HTTP/2 carries
//!   it. Regular expressions are not supported (a value starting with `~` is refused, so
//!   `NAME=~REGEX` can be added later without changing what an existing filter means).
//! - **Path prefix `P`**: the path (without the query) is `P` or continues `P` with a new segment:
//!   `/api` matches `/api`, `/api/` and `/api/v1`, but not `/apis`. A prefix ending in `/` matches
//!   only paths below it. The path is compared as sent (percent-encoding is not decoded).
//!
//! A filter with no constraint is *global*: it matches every request, and also takes non-HTTP
//! connections (see [`Filter::is_global`]).
//!
//! # Overlap
//! [`Filter::overlaps`] says whether some request could match both filters, which is what makes
//! two personal intercepts on one port conflict. Because a request has one value per header name
//! and one path, the answer is exact:
//! - for every header name both filters constrain, the values are equal, and
//! - the path prefixes (if both have one) are nested: one prefix, taken as a path, matches the
//!   other (`/api` and `/api/v1` overlap; `/api` and `/apis` do not).
//!
//! Constraints on names only one filter mentions never prevent an overlap: a request can carry
//! both headers. So `x-session=a` and `x-user=b` overlap (a request with both headers matches
//! both), and a filter overlaps any filter whose constraints are a subset of its own.

use std::fmt;

use http::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use http::request::Parts;

/// A filter as it travels: the strings the user gave, not yet checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterSpec {
    /// Header constraints, each `NAME=VALUE`.
    pub headers: Vec<String>,
    /// A path prefix, starting with `/`.
    pub path_prefix: Option<String>,
}

/// Why a [`FilterSpec`] is not a valid filter.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// A header constraint without `=`.
    #[error("header filter `{0}` is not NAME=VALUE")]
    MissingEquals(String),
    /// A header constraint with nothing before the `=`.
    #[error("header filter `{0}` has an empty header name")]
    EmptyName(String),
    /// The name is not a valid HTTP header name (token characters only).
    #[error("`{0}` is not a valid HTTP header name")]
    InvalidName(String),
    /// A header constraint with nothing after the `=`.
    #[error("header filter for `{0}` has an empty value")]
    EmptyValue(String),
    /// The value holds characters a header value cannot (control characters).
    #[error("header filter for `{0}` has a value that is not a valid HTTP header value")]
    InvalidValue(String),
    /// The value starts or ends with whitespace, which HTTP strips, so it could never match.
    #[error("header filter for `{0}` has a value that starts or ends with whitespace")]
    ValueWhitespace(String),
    /// `NAME=~...`: regular expressions are reserved for later.
    #[error("header filter for `{0}`: regular expressions (`=~`) are not supported")]
    Regex(String),
    /// The same header with two different values: no request can match.
    #[error("header `{0}` is given two different values, so the filter could never match")]
    ConflictingValues(String),
    /// The path prefix is malformed.
    #[error("path prefix `{prefix}` {reason}")]
    PathPrefix {
        /// The prefix as given.
        prefix: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A compiled filter; see the [module docs](self) for what it matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Sorted by name, one entry per name.
    headers: Vec<(HeaderName, HeaderValue)>,
    path_prefix: Option<String>,
}

impl Filter {
    /// The filter with no constraint: a global intercept's.
    pub fn global() -> Self {
        Self::default()
    }

    /// True if the filter has no constraint, so it matches every request and connection.
    pub fn is_global(&self) -> bool {
        self.headers.is_empty() && self.path_prefix.is_none()
    }

    /// True if the request (its head; the body is never looked at) matches.
    pub fn matches(&self, request: &Parts) -> bool {
        self.path_prefix
            .as_deref()
            .is_none_or(|prefix| path_matches(prefix, request.uri.path()))
            && self.headers.iter().all(|(name, value)| {
                if name == HOST && !request.headers.contains_key(HOST) {
                    request
                        .uri
                        .authority()
                        .is_some_and(|a| a.as_str().as_bytes() == value.as_bytes())
                } else {
                    combined_value_is(&request.headers, name, value.as_bytes())
                }
            })
    }

    /// True if some request could match both filters (see the [module docs](self#overlap)).
    pub fn overlaps(&self, other: &Filter) -> bool {
        let paths_nest = match (&self.path_prefix, &other.path_prefix) {
            (Some(a), Some(b)) => path_matches(a, b) || path_matches(b, a),
            _ => true,
        };
        paths_nest
            && self.headers.iter().all(|(name, value)| {
                other
                    .headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .is_none_or(|(_, v)| v == value)
            })
    }

    /// The filter back in its wire form.
    pub fn to_spec(&self) -> FilterSpec {
        FilterSpec {
            headers: self
                .headers
                .iter()
                .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v.as_bytes())))
                .collect(),
            path_prefix: self.path_prefix.clone(),
        }
    }
}

/// `x-session=dev-1, path /api`, or `all traffic` for a global filter.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_global() {
            return f.write_str("all traffic");
        }
        let mut sep = "";
        for (name, value) in &self.headers {
            write!(
                f,
                "{sep}{name}={}",
                String::from_utf8_lossy(value.as_bytes())
            )?;
            sep = ", ";
        }
        if let Some(prefix) = &self.path_prefix {
            write!(f, "{sep}path {prefix}")?;
        }
        Ok(())
    }
}

impl TryFrom<&FilterSpec> for Filter {
    type Error = FilterError;

    fn try_from(spec: &FilterSpec) -> Result<Self, FilterError> {
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(spec.headers.len());
        for raw in &spec.headers {
            let (name, value) = parse_header(raw)?;
            match headers.iter().find(|(n, _)| *n == name) {
                Some((_, v)) if *v != value => {
                    return Err(FilterError::ConflictingValues(name.to_string()))
                }
                Some(_) => {}
                None => headers.push((name, value)),
            }
        }
        headers.sort_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        let path_prefix = spec.path_prefix.as_deref().map(check_prefix).transpose()?;
        Ok(Filter {
            headers,
            path_prefix,
        })
    }
}

impl TryFrom<FilterSpec> for Filter {
    type Error = FilterError;

    fn try_from(spec: FilterSpec) -> Result<Self, FilterError> {
        Filter::try_from(&spec)
    }
}

fn parse_header(raw: &str) -> Result<(HeaderName, HeaderValue), FilterError> {
    let (name, value) = raw
        .split_once('=')
        .ok_or_else(|| FilterError::MissingEquals(raw.to_owned()))?;
    if name.is_empty() {
        return Err(FilterError::EmptyName(raw.to_owned()));
    }
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| FilterError::InvalidName(name.to_owned()))?;
    if value.is_empty() {
        return Err(FilterError::EmptyValue(name.to_string()));
    }
    if value.starts_with('~') {
        return Err(FilterError::Regex(name.to_string()));
    }
    if value.trim_matches([' ', '\t']) != value {
        return Err(FilterError::ValueWhitespace(name.to_string()));
    }
    let value = HeaderValue::from_bytes(value.as_bytes())
        .map_err(|_| FilterError::InvalidValue(name.to_string()))?;
    Ok((name, value))
}

fn check_prefix(prefix: &str) -> Result<String, FilterError> {
    let reason = if !prefix.starts_with('/') {
        Some("must start with `/`")
    } else if prefix == "/" {
        Some("matches every request: use a global intercept (no filter) instead")
    } else if prefix.contains(['?', '#']) {
        Some("must not contain `?` or `#` (only the path is matched)")
    } else if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain whitespace or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(FilterError::PathPrefix {
            prefix: prefix.to_owned(),
            reason,
        }),
        None => Ok(prefix.to_owned()),
    }
}

/// True if `path` is `prefix` or lies below it (segment-wise; see the module docs).
fn path_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// True if the value of `name` in `headers`, its field lines joined with `", "`, is `want`.
fn combined_value_is(headers: &HeaderMap, name: &HeaderName, want: &[u8]) -> bool {
    let mut lines = headers.get_all(name).iter();
    let Some(first) = lines.next() else {
        return false;
    };
    let Some(mut rest) = want.strip_prefix(first.as_bytes()) else {
        return false;
    };
    for line in lines {
        match rest
            .strip_prefix(b", ")
            .and_then(|r| r.strip_prefix(line.as_bytes()))
        {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests;
