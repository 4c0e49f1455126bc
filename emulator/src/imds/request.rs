//! What a token request must carry: decoded query parameters, the identity
//! selector (`client_id`, `object_id`, `mi_res_id`, ...), the `Metadata`
//! header and IMDS's api-versions, and the [`Rejection`] a failed check gives.

#[allow(unused_imports)]
use super::*;

/// A refusal, before the flavor gives it its body shape.
#[derive(Debug)]
pub(super) struct Rejection {
    pub(super) status: u16,
    pub(super) code: &'static str,
    pub(super) description: String,
}

impl Rejection {
    pub(super) fn new(status: u16, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
        }
    }

    pub(super) fn invalid(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", description)
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum SelectBy {
    Client,
    Object,
    Resource,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Selector<'a> {
    Default,
    By(SelectBy, &'a str),
}

#[derive(Debug)]
pub(super) enum SelectError {
    NotFound,
    Ambiguous,
}

impl SelectError {
    pub(super) fn rejection(self, ambiguous: &str) -> Rejection {
        match self {
            Self::NotFound => Rejection::invalid("Identity not found"),
            Self::Ambiguous => Rejection::invalid(ambiguous),
        }
    }
}

/// Decoded query parameters with the checks every flavor shares.
pub(super) struct Query(pub(super) Vec<(String, String)>);

impl Query {
    /// Rejects a parameter name given twice, as IMDS does.
    pub(super) fn parse(parts: &Parts) -> Result<Self, Rejection> {
        let pairs = parse_query(parts.uri.query());
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(Rejection::invalid(format!(
                    "Query parameter '{name}' is specified more than once"
                )));
            }
        }
        Ok(Self(pairs))
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn resource(&self) -> Result<&str, Rejection> {
        match self.get("resource") {
            Some(r) if !r.is_empty() => Ok(r),
            _ => Err(Rejection::invalid(
                "Required query variable 'resource' is missing",
            )),
        }
    }

    /// At most one of the flavor's selector parameters.
    pub(super) fn selector(&self, names: &[(&str, SelectBy)]) -> Result<Selector<'_>, Rejection> {
        let given: Vec<_> = names
            .iter()
            .filter_map(|(name, by)| self.get(name).map(|v| (*name, *by, v)))
            .collect();
        match given.as_slice() {
            [] => Ok(Selector::Default),
            [(_, by, value)] => Ok(Selector::By(*by, value)),
            _ => Err(Rejection::invalid(format!(
                "Only one of {} may be specified",
                names.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

pub(super) fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// Exactly one `Metadata` header, exactly `true`.
pub(super) fn require_metadata_header(parts: &Parts, code: &'static str) -> Result<(), Rejection> {
    let values: Vec<_> = parts.headers.get_all("metadata").iter().collect();
    match values.as_slice() {
        [value] if value.as_bytes() == b"true" => Ok(()),
        _ => Err(Rejection::new(
            400,
            code,
            "Required metadata header not specified",
        )),
    }
}

/// A `YYYY-MM-DD` date on or after 2018-02-01.
pub(super) fn is_supported_imds_api_version(version: &str) -> bool {
    let b = version.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return false;
    }
    let (Ok(year), Ok(month), Ok(day)) = (
        version[..4].parse::<i32>(),
        version[5..7].parse::<u8>(),
        version[8..].parse::<u8>(),
    ) else {
        return false;
    };
    let Ok(month) = time::Month::try_from(month) else {
        return false;
    };
    time::Date::from_calendar_date(year, month, day).is_ok() && version >= IMDS_MIN_API_VERSION
}
