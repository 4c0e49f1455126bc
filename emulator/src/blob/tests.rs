//! Blob Storage fake tests: bearer and SAS authorization, delegation keys,
//! and the blob operations, through a real HTTPS client.

use super::*;
use crate::authority::Principal;

const STORAGE: &str = "https://storage.azure.com/";
const VERSION: &str = "2025-11-05";

struct Harness {
    fake: BlobFake,
    authority: Arc<TokenAuthority>,
    http: reqwest::Client,
}

impl Harness {
    async fn new() -> Self {
        let authority = Arc::new(TokenAuthority::generate(sample::TENANT_ID));
        let ca = TestCa::generate(&["localhost", "127.0.0.1"]);
        let fake = BlobFake::sample(Arc::clone(&authority), &ca).await.unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap())
            .no_proxy()
            .build()
            .unwrap();
        Self {
            fake,
            authority,
            http,
        }
    }

    fn token_for(&self, principal: &Principal, audience: &str) -> String {
        self.authority
            .mint(
                principal,
                audience,
                SystemTime::now(),
                Duration::from_secs(3600),
            )
            .0
    }

    fn token(&self) -> String {
        self.token_for(&sample::system_principal(), STORAGE)
    }

    fn url(&self, blob: &str) -> String {
        self.fake.blob_url(SAMPLE_ACCOUNT, SAMPLE_CONTAINER, blob)
    }

    /// GET with the system identity's Storage token.
    async fn get(&self, url: &str) -> reqwest::Response {
        self.http
            .get(url)
            .bearer_auth(self.token())
            .header(X_MS_VERSION, VERSION)
            .send()
            .await
            .unwrap()
    }

    /// Get User Delegation Key for `principal`, valid for the next hour.
    async fn delegation_key(&self, principal: &Principal) -> HashMap<String, String> {
        let now = OffsetDateTime::now_utc();
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<KeyInfo><Start>{}</Start><Expiry>{}</Expiry></KeyInfo>",
            sas_time(now),
            sas_time(now + Duration::from_secs(3600))
        );
        let answer = self
            .http
            .post(format!(
                "{}/?restype=service&comp=userdelegationkey",
                self.fake.base_url()
            ))
            .bearer_auth(self.token_for(principal, STORAGE))
            .header(X_MS_VERSION, VERSION)
            .header("content-type", "application/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["content-type"], "application/xml");
        xml_fields(&answer.text().await.unwrap())
    }
}

/// The text of every leaf element of a flat XML document.
fn xml_fields(xml: &str) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find('>') else { break };
        let name = &rest[..close];
        rest = &rest[close + 1..];
        if name.starts_with(['/', '?']) {
            continue;
        }
        if let Some(end) = rest.find(&format!("</{name}>")) {
            if !rest[..end].contains('<') {
                fields.insert(name.to_string(), rest[..end].to_string());
            }
        }
    }
    fields
}

async fn error_of(response: reqwest::Response) -> (u16, String, HashMap<String, String>) {
    let status = response.status().as_u16();
    let header = response.headers()["x-ms-error-code"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(response.headers()["content-type"], "application/xml");
    let fields = xml_fields(&response.text().await.unwrap());
    assert_eq!(fields["Code"], header, "header and body agree");
    (status, header, fields)
}

fn hmac_base64(key: &[u8], message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

/// A user delegation SAS for `resource` (sv 2025-05-05), signed here
/// from the 24-line layout written out by hand.
fn delegation_sas(
    key: &HashMap<String, String>,
    resource: &str,
    sr: &str,
    sp: &str,
    se: &str,
    sip: &str,
) -> String {
    let sts = format!(
        "{sp}\n\n{se}\n{resource}\n{}\n{}\n{}\n{}\n{}\n{}\n\n\n\n{sip}\nhttps\n2025-05-05\n{sr}\n\n\n\n\n\n\n",
        key["SignedOid"],
        key["SignedTid"],
        key["SignedStart"],
        key["SignedExpiry"],
        key["SignedService"],
        key["SignedVersion"],
    );
    let sig = hmac_base64(&BASE64.decode(&key["Value"]).unwrap(), &sts);
    let mut pairs = vec![
        ("sv", "2025-05-05"),
        ("sr", sr),
        ("se", se),
        ("sp", sp),
        ("spr", "https"),
        ("skoid", key["SignedOid"].as_str()),
        ("sktid", key["SignedTid"].as_str()),
        ("skt", key["SignedStart"].as_str()),
        ("ske", key["SignedExpiry"].as_str()),
        ("sks", key["SignedService"].as_str()),
        ("skv", key["SignedVersion"].as_str()),
        ("sig", sig.as_str()),
    ];
    if !sip.is_empty() {
        pairs.push(("sip", sip));
    }
    query(&pairs)
}

fn in_an_hour() -> String {
    sas_time(OffsetDateTime::now_utc() + Duration::from_secs(3600))
}

#[tokio::test]
async fn get_blob_with_a_bearer_token_serves_content_and_headers() {
    let h = Harness::new().await;
    let response = h.get(&h.url(SAMPLE_BLOB)).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(
        headers["content-length"],
        SAMPLE_BLOB_CONTENT.len().to_string().as_str()
    );
    assert_eq!(headers["content-type"], "text/plain");
    let etag = headers["etag"].to_str().unwrap();
    assert!(etag.starts_with("\"0x") && etag.ends_with('"'), "{etag}");
    let last_modified = headers["last-modified"].to_str().unwrap();
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");
    let parsed = OffsetDateTime::parse(
        last_modified,
        &time::format_description::well_known::Rfc2822,
    );
    assert!(parsed.is_ok(), "RFC 1123 date: {last_modified}");
    assert_eq!(headers["x-ms-blob-type"], "BlockBlob");
    assert_eq!(headers["x-ms-version"], VERSION);
    assert_eq!(headers["accept-ranges"], "bytes");
    assert!(uuid::Uuid::parse_str(headers["x-ms-request-id"].to_str().unwrap()).is_ok());
    assert_eq!(response.text().await.unwrap(), SAMPLE_BLOB_CONTENT);

    let head = h
        .http
        .head(h.url(SAMPLE_BLOB))
        .bearer_auth(h.token())
        .header(X_MS_VERSION, VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        SAMPLE_BLOB_CONTENT.len().to_string().as_str()
    );
    assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);
    assert!(head.bytes().await.unwrap().is_empty());

    let binary = h.get(&h.url(SAMPLE_BINARY_BLOB)).await;
    assert_eq!(binary.status(), 200);
    assert_eq!(binary.headers()["content-type"], "application/octet-stream");
    let bytes = binary.bytes().await.unwrap();
    assert_eq!(bytes.len(), SAMPLE_BINARY_SIZE);
    assert_eq!(bytes.as_ref(), sample_binary().as_slice());

    let recorded = h.fake.requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[0].method, "GET");
    assert_eq!(recorded[0].path, "/devstoreaccount1/data/hello.txt");
    assert_eq!(recorded[0].authorization, Authorization::Bearer);
    assert_eq!(
        recorded[0].principal_oid.as_deref(),
        Some(sample::SYSTEM_OBJECT_ID)
    );
    assert_eq!(recorded[0].x_ms_version.as_deref(), Some(VERSION));
    assert_eq!(recorded[1].method, "HEAD");
    assert!(recorded
        .iter()
        .all(|r| r.status == 200 && r.error_code.is_none()));
}

#[tokio::test]
async fn ranges_answer_206_and_past_the_end_416() {
    let h = Harness::new().await;
    let ranged = |range_header: &'static str, value: &'static str| {
        h.http
            .get(h.url(SAMPLE_BINARY_BLOB))
            .bearer_auth(h.token())
            .header(X_MS_VERSION, VERSION)
            .header(range_header, value)
            .send()
    };
    let content = sample_binary();
    let answer = ranged("range", "bytes=1000-70999").await.unwrap();
    assert_eq!(answer.status(), 206);
    assert_eq!(
        answer.headers()["content-range"],
        format!("bytes 1000-70999/{SAMPLE_BINARY_SIZE}").as_str()
    );
    assert_eq!(answer.headers()["content-length"], "70000");
    assert_eq!(
        answer.bytes().await.unwrap().as_ref(),
        &content[1000..71_000]
    );

    let open_ended = ranged("x-ms-range", "bytes=1048000-").await.unwrap();
    assert_eq!(open_ended.status(), 206);
    assert_eq!(
        open_ended.bytes().await.unwrap().as_ref(),
        &content[1_048_000..]
    );

    let past_end = ranged("range", "bytes=2000000-").await.unwrap();
    assert_eq!(
        past_end.headers()["content-range"],
        format!("bytes */{SAMPLE_BINARY_SIZE}").as_str()
    );
    let (status, code, _) = error_of(past_end).await;
    assert_eq!((status, code.as_str()), (416, "InvalidRange"));

    let (status, code, _) = error_of(ranged("x-ms-range", "bytes=5-1").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "InvalidHeaderValue"));
}

#[tokio::test]
async fn bearer_tokens_are_checked_like_storage() {
    let h = Harness::new().await;
    let url = h.url(SAMPLE_BLOB);
    let challenge = format!(
        "Bearer authorization_uri=https://login.microsoftonline.com/{}/oauth2/authorize resource_id=https://storage.azure.com",
        sample::TENANT_ID
    );

    let anonymous = h.http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.headers()["www-authenticate"], challenge.as_str());
    let (status, code, _) = error_of(anonymous).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "NoAuthenticationInformation")
    );

    for version in [None, Some("2017-04-17")] {
        let mut request = h.http.get(&url).bearer_auth(h.token());
        if let Some(v) = version {
            request = request.header(X_MS_VERSION, v);
        }
        let (status, code, fields) = error_of(request.send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));
        assert_eq!(
            fields["AuthenticationErrorDetail"],
            "Authentication scheme Bearer is not supported in this version."
        );
    }

    let vault = h.token_for(&sample::system_principal(), "https://vault.azure.net");
    let (expired, _) = h.authority.mint(
        &sample::system_principal(),
        STORAGE,
        SystemTime::now() - Duration::from_secs(7200),
        Duration::from_secs(3600),
    );
    let foreign = TokenAuthority::generate(sample::TENANT_ID)
        .mint(
            &sample::system_principal(),
            STORAGE,
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .0;
    for (token, detail) in [
        (vault, "Audience validation failed"),
        (expired, "The token is expired"),
        (foreign, "Signature validation failed"),
    ] {
        let answer = h
            .http
            .get(&url)
            .bearer_auth(token)
            .header(X_MS_VERSION, VERSION)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.headers()["www-authenticate"], challenge.as_str());
        let (status, code, fields) = error_of(answer).await;
        assert_eq!((status, code.as_str()), (401, "InvalidAuthenticationInfo"));
        assert!(
            fields["AuthenticationErrorDetail"].contains(detail),
            "{fields:?}"
        );
    }

    // Without the trailing slash is Storage's audience too.
    let bare = h.token_for(&sample::system_principal(), "https://storage.azure.com");
    let answer = h
        .http
        .get(&url)
        .bearer_auth(bare)
        .header(X_MS_VERSION, VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let shared_key = h
        .http
        .get(&url)
        .header("authorization", "SharedKey devstoreaccount1:c2ln")
        .header(X_MS_VERSION, VERSION)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(shared_key).await;
    assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));

    let recorded = h.fake.requests();
    assert_eq!(recorded[0].authorization, Authorization::Anonymous);
    assert_eq!(
        recorded[0].error_code.as_deref(),
        Some("NoAuthenticationInformation")
    );
    assert_eq!(
        recorded[3].principal_oid, None,
        "refused tokens name no one"
    );
    assert_eq!(recorded.last().unwrap().authorization, Authorization::Other);
}

#[tokio::test]
async fn rbac_is_by_object_id_and_missing_things_are_404() {
    let h = Harness::new().await;
    // app-identity has no data role in the sample.
    let user = sample::user_assigned().principal;
    let answer = h
        .http
        .get(h.url(SAMPLE_BLOB))
        .bearer_auth(h.token_for(&user, STORAGE))
        .header(X_MS_VERSION, VERSION)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(answer).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "AuthorizationPermissionMismatch")
    );

    // A reader reads but cannot write.
    assert!(h
        .fake
        .assign_role(SAMPLE_ACCOUNT, sample::USER_OBJECT_ID, BlobRole::Reader));
    let read = h
        .http
        .get(h.url(SAMPLE_BLOB))
        .bearer_auth(h.token_for(&user, STORAGE))
        .header(X_MS_VERSION, VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let write = h
        .http
        .put(h.url("new.txt"))
        .bearer_auth(h.token_for(&user, STORAGE))
        .header(X_MS_VERSION, VERSION)
        .header("x-ms-blob-type", "BlockBlob")
        .body("x")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(write).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "AuthorizationPermissionMismatch")
    );
    assert!(h
        .fake
        .blob(SAMPLE_ACCOUNT, SAMPLE_CONTAINER, "new.txt")
        .is_none());

    let (status, code, fields) = error_of(h.get(&h.url("absent.txt")).await).await;
    assert_eq!((status, code.as_str()), (404, "BlobNotFound"));
    assert!(fields["Message"].starts_with("The specified blob does not exist.\nRequestId:"));
    let missing_container = h
        .get(&h.fake.blob_url(SAMPLE_ACCOUNT, "absent", "x.txt"))
        .await;
    let (status, code, _) = error_of(missing_container).await;
    assert_eq!((status, code.as_str()), (404, "ContainerNotFound"));
    let missing_account = h.get(&h.fake.blob_url("nosuchaccount", "data", "x")).await;
    let (status, code, _) = error_of(missing_account).await;
    assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));
    let listing = h
        .get(&format!(
            "{}/data?restype=container&comp=list",
            h.fake.base_url()
        ))
        .await;
    let (status, code, _) = error_of(listing).await;
    assert_eq!((status, code.as_str()), (501, "NotImplemented"));
}

#[tokio::test]
async fn put_blob_and_create_container_with_a_bearer_token() {
    let h = Harness::new().await;
    let create = |name: &'static str| {
        h.http
            .put(format!("{}/{name}?restype=container", h.fake.base_url()))
            .bearer_auth(h.token())
            .header(X_MS_VERSION, VERSION)
            .send()
    };
    assert_eq!(create("fresh").await.unwrap().status(), 201);
    let (status, code, _) = error_of(create("fresh").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (409, "ContainerAlreadyExists"));
    let (status, code, _) = error_of(create("Bad_Name").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "InvalidResourceName"));

    let url = h.fake.blob_url(SAMPLE_ACCOUNT, "fresh", "dir/a file.csv");
    assert!(url.ends_with("/fresh/dir/a%20file.csv"), "{url}");
    let put = h
        .http
        .put(&url)
        .bearer_auth(h.token())
        .header(X_MS_VERSION, VERSION)
        .header("x-ms-blob-type", "BlockBlob")
        .header("content-type", "text/csv")
        .body("a,b\n1,2\n")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let etag = put.headers()["etag"].to_str().unwrap().to_string();
    let stored = h
        .fake
        .blob(SAMPLE_ACCOUNT, "fresh", "dir/a file.csv")
        .unwrap();
    assert_eq!(stored.content.as_ref(), b"a,b\n1,2\n");
    assert_eq!(stored.content_type, "text/csv");
    assert_eq!(stored.etag, etag);
    let got = h.get(&url).await;
    assert_eq!(got.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(got.text().await.unwrap(), "a,b\n1,2\n");

    let untyped = h
        .http
        .put(&url)
        .bearer_auth(h.token())
        .header(X_MS_VERSION, VERSION)
        .body("x")
        .send()
        .await
        .unwrap();
    let (status, code, fields) = error_of(untyped).await;
    assert_eq!((status, code.as_str()), (400, "MissingRequiredHeader"));
    assert_eq!(fields["HeaderName"], "x-ms-blob-type");
}

#[tokio::test]
async fn user_delegation_key_carries_the_tokens_identity() {
    let h = Harness::new().await;
    let key = h.delegation_key(&sample::system_principal()).await;
    assert_eq!(key["SignedOid"], sample::SYSTEM_OBJECT_ID);
    assert_eq!(key["SignedTid"], sample::TENANT_ID);
    assert_eq!(key["SignedService"], "b");
    assert_eq!(key["SignedVersion"], VERSION);
    assert_eq!(BASE64.decode(&key["Value"]).unwrap().len(), 32);
    // Derived from the fake's seed and the key's fields, nothing stored.
    let derived = delegation_key(
        &h.fake.shared.seed,
        &key["SignedOid"],
        &key["SignedTid"],
        &key["SignedStart"],
        &key["SignedExpiry"],
        "b",
        &key["SignedVersion"],
    );
    assert_eq!(BASE64.encode(derived), key["Value"]);

    let post = |body: String, version: &'static str| {
        h.http
            .post(format!(
                "{}/?restype=service&comp=userdelegationkey",
                h.fake.base_url()
            ))
            .bearer_auth(h.token())
            .header(X_MS_VERSION, version)
            .body(body)
            .send()
    };
    let now = OffsetDateTime::now_utc();
    let too_long = format!(
        "<KeyInfo><Start>{}</Start><Expiry>{}</Expiry></KeyInfo>",
        sas_time(now),
        sas_time(now + Duration::from_secs(8 * 24 * 3600))
    );
    let (status, code, fields) = error_of(post(too_long, VERSION).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "InvalidXmlNodeValue"));
    assert_eq!(fields["XmlNodeName"], "Expiry");
    let (status, code, _) = error_of(post("<KeyInfo><Start>".into(), VERSION).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "InvalidXmlDocument"));
    let no_expiry = format!("<KeyInfo><Start>{}</Start></KeyInfo>", sas_time(now));
    let (status, code, _) = error_of(post(no_expiry, VERSION).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "MissingRequiredXmlNode"));
    let ok_body = format!(
        "<KeyInfo><Expiry>{}</Expiry></KeyInfo>",
        sas_time(now + Duration::from_secs(60))
    );
    let (status, code, _) = error_of(post(ok_body.clone(), "2018-03-28").await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "InvalidQueryParameterValue"));
    assert_eq!(post(ok_body, VERSION).await.unwrap().status(), 200);

    // No data role, no key.
    let user = sample::user_assigned().principal;
    let refused = h
        .http
        .post(format!(
            "{}/?restype=service&comp=userdelegationkey",
            h.fake.base_url()
        ))
        .bearer_auth(h.token_for(&user, STORAGE))
        .header(X_MS_VERSION, VERSION)
        .body(format!(
            "<KeyInfo><Expiry>{}</Expiry></KeyInfo>",
            sas_time(now + Duration::from_secs(60))
        ))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(refused).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "AuthorizationPermissionMismatch")
    );
}

#[tokio::test]
async fn user_delegation_sas_is_verified() {
    let h = Harness::new().await;
    let key = h.delegation_key(&sample::system_principal()).await;
    let resource = "/blob/devstoreaccount1/data/hello.txt";
    let se = in_an_hour();
    let read = delegation_sas(&key, resource, "b", "r", &se, "");
    let url = format!("{}?{read}", h.url(SAMPLE_BLOB));
    let answer = h.http.get(&url).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["x-ms-version"],
        "2025-05-05",
        "sv when no header"
    );
    assert_eq!(answer.text().await.unwrap(), SAMPLE_BLOB_CONTENT);
    let recorded = h.fake.requests().pop().unwrap();
    assert_eq!(recorded.authorization, Authorization::UserDelegationSas);
    assert_eq!(
        recorded.principal_oid.as_deref(),
        Some(sample::SYSTEM_OBJECT_ID)
    );
    assert_eq!(recorded.query_value("sig").as_deref(), Some("REDACTED"));
    assert_eq!(recorded.query_value("sp").as_deref(), Some("r"));

    // Read-only cannot write.
    let put = h
        .http
        .put(&url)
        .header("x-ms-blob-type", "BlockBlob")
        .body("overwritten")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(put).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "AuthorizationPermissionMismatch")
    );
    assert_eq!(
        h.fake
            .blob(SAMPLE_ACCOUNT, SAMPLE_CONTAINER, SAMPLE_BLOB)
            .unwrap()
            .content,
        SAMPLE_BLOB_CONTENT
    );

    // Tampering with any signed field breaks the signature.
    for tampered in [
        url.replace("sp=r", "sp=rw"),
        url.replace("hello.txt?", "other.txt?"),
        url.replace("sig=", "sig=AAAA"),
    ] {
        let (status, code, fields) = error_of(h.http.get(&tampered).send().await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "AuthenticationFailed"),
            "{tampered}"
        );
        assert!(
            fields["AuthenticationErrorDetail"].starts_with("Signature did not match"),
            "{fields:?}"
        );
    }

    // Create-only writes new blobs but does not overwrite.
    let new_resource = "/blob/devstoreaccount1/data/new.txt";
    let create = delegation_sas(&key, new_resource, "b", "c", &se, "");
    let new_url = format!("{}?{create}", h.url("new.txt"));
    let put = |url: String| {
        h.http
            .put(url)
            .header("x-ms-blob-type", "BlockBlob")
            .body("created with a SAS")
            .send()
    };
    assert_eq!(put(new_url.clone()).await.unwrap().status(), 201);
    let (status, code, _) = error_of(put(new_url).await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "AuthorizationPermissionMismatch")
    );

    // A container SAS covers every blob in it.
    let container = delegation_sas(&key, "/blob/devstoreaccount1/data", "c", "rw", &se, "");
    let answer = h
        .http
        .get(format!("{}?{container}", h.url(SAMPLE_BINARY_BLOB)))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.bytes().await.unwrap().len(), SAMPLE_BINARY_SIZE);

    // Expired, and from the wrong address.
    let past = sas_time(OffsetDateTime::now_utc() - Duration::from_secs(60));
    let expired = delegation_sas(&key, resource, "b", "r", &past, "");
    let (status, code, fields) = error_of(
        h.http
            .get(format!("{}?{expired}", h.url(SAMPLE_BLOB)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));
    assert!(fields["AuthenticationErrorDetail"].contains("time frame"));
    let elsewhere = delegation_sas(&key, resource, "b", "r", &se, "10.0.0.1-10.0.0.9");
    let (status, code, _) = error_of(
        h.http
            .get(format!("{}?{elsewhere}", h.url(SAMPLE_BLOB)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (403, "AuthorizationSourceIPMismatch")
    );
    let loopback = delegation_sas(&key, resource, "b", "r", &se, "127.0.0.1");
    let answer = h
        .http
        .get(format!("{}?{loopback}", h.url(SAMPLE_BLOB)))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // The SAS is bounded by the signer's RBAC: revoke it, and the SAS stops working.
    h.fake
        .shared
        .data()
        .accounts
        .get_mut(SAMPLE_ACCOUNT)
        .unwrap()
        .roles
        .clear();
    let (status, code, _) = error_of(h.http.get(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "AuthorizationPermissionMismatch")
    );
}

#[tokio::test]
async fn delegation_keys_of_another_fake_do_not_verify() {
    let h = Harness::new().await;
    let other = Harness::new().await;
    let key = other.delegation_key(&sample::system_principal()).await;
    let sas = delegation_sas(
        &key,
        "/blob/devstoreaccount1/data/hello.txt",
        "b",
        "r",
        &in_an_hour(),
        "",
    );
    let (status, code, _) = error_of(
        h.http
            .get(format!("{}?{sas}", h.url(SAMPLE_BLOB)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));
    // A SAS cannot ask for a delegation key.
    let sas_udk = format!(
        "{}/?restype=service&comp=userdelegationkey&{sas}",
        h.fake.base_url()
    );
    let (status, code, _) = error_of(h.http.post(sas_udk).body("").send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));
}

#[tokio::test]
async fn service_sas_is_verified_with_the_account_key() {
    let h = Harness::new().await;
    let account_key = BASE64.decode(AZURITE_ACCOUNT_KEY).unwrap();
    let se = in_an_hour();
    let resource = "/blob/devstoreaccount1/data/hello.txt";
    // 2020-12-06+ layout (16 lines), as the ARM fake signs.
    let sts16 = format!("r\n\n{se}\n{resource}\n\n\nhttps\n2025-05-05\nb\n\n\n\n\n\n\n");
    let sig16 = hmac_base64(&account_key, &sts16);
    let sas16 = query(&[
        ("sv", "2025-05-05"),
        ("sr", "b"),
        ("se", &se),
        ("sp", "r"),
        ("spr", "https"),
        ("sig", &sig16),
    ]);
    let answer = h
        .http
        .get(format!("{}?{sas16}", h.url(SAMPLE_BLOB)))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), SAMPLE_BLOB_CONTENT);
    let recorded = h.fake.requests().pop().unwrap();
    assert_eq!(recorded.authorization, Authorization::ServiceSas);
    assert_eq!(recorded.principal_oid, None);

    // 2018-11-09 .. 2020-10-02 layout (15 lines, no ses), with a
    // response-header override.
    let sts15 = format!("r\n\n{se}\n{resource}\n\n\n\n2019-12-12\nb\n\n\n\n\n\ntext/x-override");
    let sig15 = hmac_base64(&account_key, &sts15);
    let sas15 = query(&[
        ("sv", "2019-12-12"),
        ("sr", "b"),
        ("se", &se),
        ("sp", "r"),
        ("rsct", "text/x-override"),
        ("sig", &sig15),
    ]);
    let answer = h
        .http
        .get(format!("{}?{sas15}", h.url(SAMPLE_BLOB)))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "text/x-override");

    // Signed with another key.
    let forged = query(&[
        ("sv", "2025-05-05"),
        ("sr", "b"),
        ("se", &se),
        ("sp", "r"),
        ("spr", "https"),
        ("sig", &hmac_base64(b"not the account key", &sts16)),
    ]);
    let (status, code, _) = error_of(
        h.http
            .get(format!("{}?{forged}", h.url(SAMPLE_BLOB)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));

    // A version whose layout the fake does not know is refused, not guessed.
    let old = query(&[
        ("sv", "2015-04-05"),
        ("sr", "b"),
        ("se", &se),
        ("sp", "r"),
        ("sig", &sig16),
    ]);
    let (status, code, fields) = error_of(
        h.http
            .get(format!("{}?{old}", h.url(SAMPLE_BLOB)))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));
    assert!(fields["AuthenticationErrorDetail"].contains("sv=2015-04-05"));
}

#[test]
fn formats() {
    assert!(is_version("2025-11-05"));
    assert!(!is_version("2025-11-5"));
    assert!(!is_version("latest"));
    let t = parse_time("2026-11-22T02:00:00Z").unwrap();
    assert_eq!(sas_time(t), "2026-11-22T02:00:00Z");
    assert_eq!(http_date(t), "Sun, 22 Nov 2026 02:00:00 GMT");
    assert_eq!(parse_time("2026-11-22T02:00Z"), Some(t));
    assert_eq!(
        parse_time("2026-11-22").map(sas_time).as_deref(),
        Some("2026-11-22T00:00:00Z")
    );
    assert_eq!(
        parse_time("2026-11-22T02:00:00.1234567Z")
            .map(sas_time)
            .as_deref(),
        Some("2026-11-22T02:00:00Z")
    );
    assert!(parse_time("tomorrow").is_none());
    assert_eq!(ip_range_contains("127.0.0.1", CLIENT_IP), Some(true));
    assert_eq!(
        ip_range_contains("127.0.0.0-127.0.0.9", CLIENT_IP),
        Some(true)
    );
    assert_eq!(
        ip_range_contains("10.0.0.1-10.0.0.9", CLIENT_IP),
        Some(false)
    );
    assert_eq!(ip_range_contains("nope", CLIENT_IP), None);
    assert_eq!(redact_sig("sv=1&sig=abc%3D&sp=r"), "sv=1&sig=REDACTED&sp=r");
    assert_eq!(xml_escape("a<b&'c'"), "a&lt;b&amp;&apos;c&apos;");
    assert_eq!(sample_binary().len(), SAMPLE_BINARY_SIZE);
    assert_ne!(sample_binary()[..16], [0u8; 16]);
}
