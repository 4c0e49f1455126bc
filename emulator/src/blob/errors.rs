//! Storage's error answers: the XML `<Error>` body, `x-ms-error-code`, the
//! bearer challenge, and the named errors the other modules return.

#[allow(unused_imports)]
use super::*;

/// A Storage error answer: XML body plus `x-ms-error-code`.
#[derive(Debug)]
pub(super) struct StorageError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    /// `<AuthenticationErrorDetail>`.
    pub(super) detail: Option<String>,
    /// More elements after the message, such as `<HeaderName>`.
    pub(super) elements: Vec<(&'static str, String)>,
    pub(super) headers: Vec<(HeaderName, String)>,
}

impl StorageError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
            elements: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub(super) fn detail(mut self, detail: &str) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    pub(super) fn element(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.elements.push((name, value.into()));
        self
    }

    pub(super) fn header(mut self, name: HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Storage's bearer challenge (unquoted values).
    pub(super) fn challenge(self, tenant_id: &str) -> Self {
        self.header(
            header::WWW_AUTHENTICATE,
            format!("Bearer authorization_uri=https://login.microsoftonline.com/{tenant_id}/oauth2/authorize resource_id=https://storage.azure.com"),
        )
    }

    pub(super) fn render(self, request_id: &str, head: bool) -> Response {
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code><Message>{}\nRequestId:{request_id}\nTime:{}</Message>",
            self.code,
            xml_escape(&self.message),
            OffsetDateTime::now_utc()
                .format(format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
                ))
                .unwrap_or_default()
        );
        if let Some(detail) = &self.detail {
            xml.push_str(&format!(
                "<AuthenticationErrorDetail>{}</AuthenticationErrorDetail>",
                xml_escape(detail)
            ));
        }
        for (name, value) in &self.elements {
            xml.push_str(&format!("<{name}>{}</{name}>", xml_escape(value)));
        }
        xml.push_str("</Error>");
        let mut response = if head {
            Response::new(Body::empty())
        } else {
            Response::new(Body::from(xml))
        };
        *response.status_mut() = self.status;
        let out = response.headers_mut();
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
        out.insert("x-ms-error-code", HeaderValue::from_static(self.code));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                out.insert(name, value);
            }
        }
        response
    }
}

pub(super) fn auth_failed(detail: &str) -> StorageError {
    StorageError::new(
        StatusCode::FORBIDDEN,
        "AuthenticationFailed",
        "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
    )
    .detail(detail)
}

pub(super) fn bearer_only() -> StorageError {
    auth_failed("A SAS authorizes Get Blob and Put Blob here; this operation needs a bearer token.")
}

pub(super) fn permission_mismatch() -> StorageError {
    StorageError::new(
        StatusCode::FORBIDDEN,
        "AuthorizationPermissionMismatch",
        "This request is not authorized to perform this operation using this permission.",
    )
}

pub(super) fn account_not_found() -> StorageError {
    StorageError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "The specified resource does not exist.",
    )
}

pub(super) fn container_not_found() -> StorageError {
    StorageError::new(
        StatusCode::NOT_FOUND,
        "ContainerNotFound",
        "The specified container does not exist.",
    )
}

pub(super) fn blob_not_found() -> StorageError {
    StorageError::new(
        StatusCode::NOT_FOUND,
        "BlobNotFound",
        "The specified blob does not exist.",
    )
}

pub(super) fn invalid_header(name: &str, value: &str) -> StorageError {
    StorageError::new(
        StatusCode::BAD_REQUEST,
        "InvalidHeaderValue",
        "The value for one of the HTTP headers is not in the correct format.",
    )
    .element("HeaderName", name)
    .element("HeaderValue", value)
}

pub(super) fn not_implemented(what: &str) -> StorageError {
    StorageError::new(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        format!("The emulator's Blob Storage does not implement {what}."),
    )
}
