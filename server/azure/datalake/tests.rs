//! Listing validation, both JSON shapes, error mapping, and the page fetcher
//! against the emulator's Gen1 and Gen2 fakes over real TLS.

use std::{sync::Arc, time::Duration};

use identity_gateway_emulator::{
    datalake_gen1::{DataLakeGen1Fake, DATALAKE_GEN1_AUDIENCE},
    datalake_gen2::{DataLakeGen2Fake, STORAGE_AUDIENCE},
    faults::{Fault, Grant},
    tls::TestCa,
    TokenAuthority,
};

use super::*;
use crate::testing;
use identity_gateway_core::{clock::ManualClock, http::UpstreamConfig, AccessToken};

fn guard() -> HostGuard {
    HostGuard::new(&["localhost".into()], false)
}

fn request(url: &str) -> ListRequest<'_> {
    ListRequest {
        account_url: url,
        ..ListRequest::default()
    }
}

fn field_of(err: &GatewayError) -> &str {
    match err {
        GatewayError::InvalidArgument { field, .. } => field,
        other => panic!("not INVALID_ARGUMENT: {other}"),
    }
}

#[test]
fn the_generation_comes_from_the_host_or_the_field() {
    let gen1 = Listing::new(&guard(), &request("https://myadls.azuredatalakestore.net")).unwrap();
    assert_eq!(gen1.generation(), Generation::Gen1);
    assert_eq!(gen1.audience(), "https://datalake.azure.net/");
    assert_eq!(gen1.account(), "myadls");
    let gen2 = Listing::new(
        &guard(),
        &ListRequest {
            filesystem: "data",
            ..request("https://acct.dfs.core.windows.net/")
        },
    )
    .unwrap();
    assert_eq!(gen2.generation(), Generation::Gen2);
    assert_eq!(gen2.audience(), "https://storage.azure.com/");

    let err = Listing::new(&guard(), &request("https://localhost:9443")).unwrap_err();
    assert_eq!(field_of(&err), "generation");
    let local = Listing::new(
        &guard(),
        &ListRequest {
            generation: Some(Generation::Gen1),
            ..request("https://localhost:9443")
        },
    )
    .unwrap();
    assert_eq!(local.generation(), Generation::Gen1);
    let err = Listing::new(
        &guard(),
        &ListRequest {
            generation: Some(Generation::Gen2),
            filesystem: "data",
            ..request("https://myadls.azuredatalakestore.net")
        },
    )
    .unwrap_err();
    assert_eq!(field_of(&err), "generation");
}

#[test]
fn hostile_and_malformed_accounts_are_refused() {
    for (url, generation) in [
        ("https://evil.example", None),
        ("https://evil.example", Some(Generation::Gen2)),
        ("https://evil.example", Some(Generation::Gen1)),
        ("https://acct.dfs.core.windows.net.evil.example", None),
        ("http://acct.dfs.core.windows.net", None),
        ("https://acct.dfs.core.windows.net/data", None),
        ("https://acct.dfs.core.windows.net?sig=x", None),
        ("", None),
        ("acct.dfs.core.windows.net", None),
    ] {
        let err = Listing::new(
            &guard(),
            &ListRequest {
                generation,
                filesystem: "data",
                ..request(url)
            },
        )
        .unwrap_err();
        assert_eq!(field_of(&err), "account_url", "{url}");
    }
}

#[test]
fn filesystems_paths_page_sizes_and_continuations_are_validated() {
    let gen2 = |filesystem: &'static str, path: &'static str, page_size: u32| {
        Listing::new(
            &guard(),
            &ListRequest {
                filesystem,
                path,
                page_size,
                ..request("https://acct.dfs.core.windows.net")
            },
        )
    };
    for ok in ["abc", "data-2024", "$logs"] {
        assert!(gen2(ok, "", 0).is_ok(), "{ok}");
    }
    for bad in ["", "ab", "Data", "a--b", "-abc", "abc-", "a_b"] {
        assert_eq!(
            field_of(&gen2(bad, "", 0).unwrap_err()),
            "filesystem",
            "{bad}"
        );
    }
    assert_eq!(gen2("data", "", 0).unwrap().page_size(), DEFAULT_PAGE_SIZE);
    assert_eq!(gen2("data", "", 5000).unwrap().page_size(), 5000);
    assert_eq!(field_of(&gen2("data", "", 5001).unwrap_err()), "page_size");
    for bad in ["a/../b", "./x", "a\nb"] {
        assert_eq!(
            field_of(&gen2("data", bad, 0).unwrap_err()),
            "path",
            "{bad:?}"
        );
    }
    let listing = gen2("data", "/raw//2024/", 0).unwrap();
    assert_eq!(
        listing.describe(),
        "https://acct.dfs.core.windows.net/data/raw/2024"
    );
    assert_eq!(
        field_of(&listing.validate_continuation("a\u{1}b").unwrap_err()),
        "continuation"
    );
    assert!(listing.validate_continuation("VBbr+/x==").is_ok());

    let gen1 = |filesystem: &'static str, recursive: bool| {
        Listing::new(
            &guard(),
            &ListRequest {
                filesystem,
                recursive,
                ..request("https://myadls.azuredatalakestore.net")
            },
        )
    };
    assert_eq!(field_of(&gen1("data", false).unwrap_err()), "filesystem");
    assert_eq!(field_of(&gen1("", true).unwrap_err()), "recursive");
    let listing = gen1("", false).unwrap();
    assert_eq!(
        field_of(&listing.validate_continuation("a/b").unwrap_err()),
        "continuation"
    );
}

#[test]
fn page_urls_encode_every_part() {
    let gen1 = Listing::new(
        &guard(),
        &ListRequest {
            path: "/dir one/sub",
            page_size: 10,
            ..request("https://myadls.azuredatalakestore.net")
        },
    )
    .unwrap();
    assert_eq!(
        gen1.page_url(Some("a&b")).as_str(),
        "https://myadls.azuredatalakestore.net/webhdfs/v1/dir%20one/sub?op=LISTSTATUS&listSize=11&api-version=2016-11-01&listAfter=a%26b"
    );
    let root = Listing::new(&guard(), &request("https://myadls.azuredatalakestore.net")).unwrap();
    assert!(root.page_url(None).as_str().starts_with(
        "https://myadls.azuredatalakestore.net/webhdfs/v1/?op=LISTSTATUS&listSize=1001&"
    ));
    let big = Listing::new(
        &guard(),
        &ListRequest {
            page_size: 5000,
            ..request("https://myadls.azuredatalakestore.net")
        },
    )
    .unwrap();
    assert_eq!(big.gen1_list_size(), 4000);

    let gen2 = Listing::new(
        &guard(),
        &ListRequest {
            filesystem: "data",
            path: "raw/2024",
            recursive: true,
            page_size: 50,
            ..request("https://acct.dfs.core.windows.net")
        },
    )
    .unwrap();
    assert_eq!(
        gen2.page_url(Some("VBb+/x=")).as_str(),
        "https://acct.dfs.core.windows.net/data?resource=filesystem&recursive=true&maxResults=50&directory=raw%2F2024&continuation=VBb%2B%2Fx%3D"
    );
}

#[test]
fn gen1_listings_parse_as_captured() {
    let body = br#"{"FileStatuses":{"FileStatus":[
      {"length":0,"pathSuffix":"TestFolder","type":"DIRECTORY","blockSize":0,
       "accessTime":1507934941392,"modificationTime":1508105430590,"replication":0,
       "permission":"770","owner":"bd0e76d8-ad45-4fe1-8941-04a7bf27f071",
       "group":"bd0e76d8-ad45-4fe1-8941-04a7bf27f071"},
      {"length":1589881,"pathSuffix":"vehicle1_09142014.csv","type":"FILE","blockSize":268435456,
       "accessTime":1491323529542,"modificationTime":1491323531638,"replication":1,
       "permission":"770","owner":"o","group":"g","msExpirationTime":0,"aclBit":false}
    ]}}"#;
    let entries = parse_gen1(body, &[]).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].name, "TestFolder");
    assert!(entries[0].is_directory);
    assert_eq!(
        entries[0].modified,
        Some(UNIX_EPOCH + Duration::from_millis(1_508_105_430_590))
    );
    assert_eq!(entries[1].length, 1_589_881);
    assert!(!entries[1].is_directory);
    assert_eq!(entries[1].permissions, "770");
    assert_eq!(
        (entries[1].owner.as_str(), entries[1].group.as_str()),
        ("o", "g")
    );

    // A file lists as itself with an empty pathSuffix; numbers may be strings.
    let file = parse_gen1(
        br#"{"FileStatuses":{"FileStatus":[{"pathSuffix":"","type":"FILE","length":"5","permission":640,"modificationTime":-1}]}}"#,
        &["dir".into(), "f.txt".into()],
    )
    .unwrap();
    assert_eq!(file[0].name, "f.txt");
    assert_eq!(file[0].length, 5);
    assert_eq!(file[0].permissions, "640");
    assert_eq!(file[0].modified, None);
    assert!(matches!(
        parse_gen1(b"{\"paths\":[]}", &[]),
        Err(GatewayError::Upstream(_))
    ));
}

#[test]
fn gen2_listings_parse_string_encoded_fields() {
    let body = br#"{"paths":[
     {"contentLength":"0","creationTime":"133215072889667419","etag":"0x8DB147E4CC7FF5B",
      "expiryTime":"0","group":"$superuser","isDirectory":"true",
      "lastModified":"Wed, 22 Feb 2023 02:41:28 GMT","name":"dir1/sub","owner":"$superuser",
      "permissions":"rwxr-x---"},
     {"contentLength":"456789","creationTime":"1","etag":"0x8DB","group":"g",
      "lastModified":"Wed, 22 Feb 2023 02:41:29 GMT","name":"dir1/file.bin","owner":"o",
      "permissions":"rw-r-----"},
     {"contentLength":12,"isDirectory":false,"name":"typed.bin","lastModified":"yesterday"}
    ]}"#;
    let entries = parse_gen2(body).unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries[0].is_directory);
    assert_eq!(entries[0].name, "dir1/sub");
    assert_eq!(
        entries[0].modified,
        Some(UNIX_EPOCH + Duration::from_secs(1_677_033_688))
    );
    assert_eq!(entries[0].permissions, "rwxr-x---");
    assert!(!entries[1].is_directory);
    assert_eq!(entries[1].length, 456_789);
    assert_eq!(entries[2].length, 12);
    assert_eq!(entries[2].modified, None);
    assert!(parse_gen2(br#"{"paths":{}}"#).is_err());
    assert_eq!(parse_gen2(b"{}").unwrap(), Vec::new());
}

#[test]
fn errors_map_by_generation() {
    let gen1 = Listing::new(&guard(), &request("https://myadls.azuredatalakestore.net")).unwrap();
    let gen2 = Listing::new(
        &guard(),
        &ListRequest {
            filesystem: "data",
            ..request("https://acct.dfs.core.windows.net")
        },
    )
    .unwrap();
    let map = |listing: &Listing, status: u16, body: &str, continued: bool| {
        map_error(
            listing,
            &Refusal {
                status: StatusCode::from_u16(status).unwrap(),
                body: body.as_bytes(),
                error_code: None,
                sent_continuation: continued,
            },
        )
    };
    let remote = |exception: &str| {
        format!(
            r#"{{"RemoteException":{{"exception":"{exception}","javaClassName":"x","message":"m [id][time]"}}}}"#
        )
    };
    assert!(
        matches!(map(&gen1, 404, &remote("FileNotFoundException"), false), GatewayError::NotFound(m) if m.contains("FileNotFoundException"))
    );
    assert!(
        matches!(map(&gen1, 403, &remote("AccessControlException"), false), GatewayError::PermissionDenied(m) if m.contains("ACL"))
    );
    assert_eq!(
        field_of(&map(&gen1, 400, &remote("IllegalArgumentException"), false)),
        "path"
    );
    assert!(
        matches!(map(&gen1, 401, &remote("SecurityException"), false), GatewayError::PermissionDenied(m) if m.contains("https://datalake.azure.net/"))
    );
    assert!(matches!(
        map(&gen1, 429, &remote("ThrottledException"), false),
        GatewayError::Throttled(_)
    ));

    let storage = |code: &str| {
        format!(
            r#"{{"error":{{"code":"{code}","message":"Some text.\nRequestId:abc\nTime:2024-01-01T00:00:00Z"}}}}"#
        )
    };
    let missing = map(&gen2, 404, &storage("PathNotFound"), false);
    assert!(
        matches!(&missing, GatewayError::NotFound(m) if m.contains("PathNotFound") && !m.contains("RequestId")),
        "{missing}"
    );
    assert!(
        matches!(map(&gen2, 403, &storage("AuthorizationPermissionMismatch"), false), GatewayError::PermissionDenied(m) if m.contains("Storage Blob Data Reader"))
    );
    assert!(
        matches!(map(&gen2, 403, &storage("AuthorizationFailure"), false), GatewayError::PermissionDenied(m) if m.contains("AuthorizationFailure"))
    );
    assert_eq!(
        field_of(&map(
            &gen2,
            400,
            &storage("InvalidQueryParameterValue"),
            true
        )),
        "continuation"
    );
    assert!(matches!(
        map(&gen2, 503, "<html>", false),
        GatewayError::Unavailable(_)
    ));
    // The code header stands in for a body the gateway cannot read.
    let headed = map_error(
        &gen2,
        &Refusal {
            status: StatusCode::FORBIDDEN,
            body: b"",
            error_code: Some("AuthorizationPermissionMismatch"),
            sent_continuation: false,
        },
    );
    assert!(matches!(headed, GatewayError::PermissionDenied(m) if m.contains("RBAC")));
}

/// An authority, an upstream whose client trusts the fakes' CA, on a
/// manual clock, and a token provider minting real tokens.
struct Bench {
    authority: Arc<TokenAuthority>,
    ca: TestCa,
    up: Upstream,
    clock: ManualClock,
    tokens: Arc<testing::MintingTokens>,
}

impl Bench {
    fn new() -> Self {
        let ca = TestCa::generate(&["localhost", "127.0.0.1"]);
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.ca_pem()).unwrap();
        let config = UpstreamConfig {
            ca_files: vec![ca_file],
            ..UpstreamConfig::default()
        };
        let clock = ManualClock::new();
        let authority = Arc::new(TokenAuthority::generate(
            "dc822496-97fa-4380-991a-c8b4ba5d4f73",
        ));
        let tokens = testing::MintingTokens::new(Arc::clone(&authority));
        let up = testing::upstream(config, &clock, tokens.clone());
        Self {
            authority,
            ca,
            up,
            clock,
            tokens,
        }
    }

    /// A page fetched with a token for `token`'s audience (whatever the
    /// listing's own audience), so tests can send the wrong one.
    async fn page(
        &self,
        listing: &Listing,
        continuation: Option<&str>,
        token: &AccessToken,
    ) -> Result<Page, GatewayError> {
        self.tokens.mint_for(Some(&token.resource));
        fetch_page(
            &self.up,
            listing,
            continuation,
            &IdentitySelector::SystemAssigned,
            None,
        )
        .await
    }

    fn token(&self, audience: &str) -> AccessToken {
        self.tokens.mint(audience)
    }

    /// Every page of `listing`, following continuations.
    async fn walk(&self, listing: &Listing, token: &AccessToken) -> Vec<Page> {
        let mut pages = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self.page(listing, next.as_deref(), token).await.unwrap();
            next = page.continuation.clone();
            pages.push(page);
            if next.is_none() {
                return pages;
            }
        }
    }
}

fn gen1_listing(fake: &DataLakeGen1Fake, path: &'static str, page_size: u32) -> Listing {
    let url = fake.account_url();
    Listing::new(
        &guard(),
        &ListRequest {
            account_url: &url,
            generation: Some(Generation::Gen1),
            path,
            page_size,
            ..ListRequest::default()
        },
    )
    .unwrap()
}

#[tokio::test]
async fn gen1_pages_with_a_look_ahead_and_no_empty_tail() {
    let bench = Bench::new();
    let fake = DataLakeGen1Fake::start(Arc::clone(&bench.authority), &bench.ca)
        .await
        .unwrap();
    fake.add_generated_dir("/ten", 10).unwrap();
    fake.add_generated_dir("/nine", 9).unwrap();
    let token = bench.token(DATALAKE_GEN1_AUDIENCE);

    let pages = bench.walk(&gen1_listing(&fake, "/ten", 3), &token).await;
    let sizes: Vec<usize> = pages.iter().map(|p| p.entries.len()).collect();
    assert_eq!(sizes, [3, 3, 3, 1]);
    assert_eq!(pages[0].continuation.as_deref(), Some("file-00000002"));
    let names: Vec<&str> = pages
        .iter()
        .flat_map(|p| &p.entries)
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names.len(), 10);
    assert_eq!(names[9], "file-00000009");
    assert!(pages[0].entries[0].modified.is_some());
    assert_eq!(pages[0].entries[0].permissions, "640");

    // Exactly three full pages: no fourth, empty request.
    let before = fake.requests().len();
    let pages = bench.walk(&gen1_listing(&fake, "/nine", 3), &token).await;
    assert_eq!(pages.len(), 3);
    assert_eq!(fake.requests().len() - before, 3);
    let last = fake.requests().pop().unwrap();
    assert_eq!(last.query_param("listSize").as_deref(), Some("4"));
    assert_eq!(
        last.query_param("listAfter").as_deref(),
        Some("file-00000005")
    );
    assert_eq!(last.audience.as_deref(), Some(DATALAKE_GEN1_AUDIENCE));
}

#[tokio::test]
async fn gen1_errors_come_from_the_remote_exception() {
    let bench = Bench::new();
    let fake = DataLakeGen1Fake::start(Arc::clone(&bench.authority), &bench.ca)
        .await
        .unwrap();
    let token = bench.token(DATALAKE_GEN1_AUDIENCE);
    let missing = bench
        .page(&gen1_listing(&fake, "/nope", 10), None, &token)
        .await;
    assert!(
        matches!(missing, Err(GatewayError::NotFound(m)) if m.contains("FileNotFoundException"))
    );
    fake.set_grant(Grant::only(["00000000-0000-0000-0000-000000000001"]));
    let denied = bench
        .page(&gen1_listing(&fake, "/", 10), None, &token)
        .await;
    assert!(
        matches!(denied, Err(GatewayError::PermissionDenied(m)) if m.contains("AccessControlException"))
    );
    let storage = bench.token(STORAGE_AUDIENCE);
    let wrong = bench
        .page(&gen1_listing(&fake, "/", 10), None, &storage)
        .await;
    assert!(matches!(wrong, Err(GatewayError::PermissionDenied(m)) if m.contains("rejected")));
}

fn gen2_listing(
    fake: &DataLakeGen2Fake,
    path: &'static str,
    recursive: bool,
    page_size: u32,
) -> Listing {
    let url = fake.account_url();
    Listing::new(
        &guard(),
        &ListRequest {
            account_url: &url,
            generation: Some(Generation::Gen2),
            filesystem: "data",
            path,
            recursive,
            page_size,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn gen2_follows_x_ms_continuation_and_retries_throttling() {
    let bench = Bench::new();
    let fake = DataLakeGen2Fake::start(Arc::clone(&bench.authority), &bench.ca)
        .await
        .unwrap();
    fake.create_file("data", "a/x.csv", 10).unwrap();
    fake.add_generated_dir("data", "a/gen", 25).unwrap();
    let token = bench.token(STORAGE_AUDIENCE);
    fake.faults().push([Fault::throttle(1)]);

    let pages = bench
        .walk(&gen2_listing(&fake, "a", true, 10), &token)
        .await;
    let names: Vec<&str> = pages
        .iter()
        .flat_map(|p| &p.entries)
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names.len(), 27);
    assert_eq!(names[0], "a/gen");
    assert_eq!(names[26], "a/x.csv");
    assert_eq!(pages.len(), 3);
    assert_eq!(bench.clock.backoffs(), [Duration::from_secs(1)]);
    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].status, 429);
    assert_eq!(
        requests[2].query_param("continuation"),
        pages[0].continuation,
        "the opaque token goes back verbatim"
    );
    assert!(requests
        .iter()
        .all(|r| r.query_param("recursive").as_deref() == Some("true")
            && r.query_param("directory").as_deref() == Some("a")
            && r.query_param("maxResults").as_deref() == Some("10")));
    let file = pages[2].entries.last().unwrap();
    assert_eq!((file.length, file.is_directory), (10, false));
    assert_eq!(file.permissions, "rw-r-----");
}

#[tokio::test]
async fn gen2_errors_come_from_the_error_json() {
    let bench = Bench::new();
    let fake = DataLakeGen2Fake::start(Arc::clone(&bench.authority), &bench.ca)
        .await
        .unwrap();
    fake.create_directory("data", "a").unwrap();
    let token = bench.token(STORAGE_AUDIENCE);
    let missing = bench
        .page(&gen2_listing(&fake, "b", false, 10), None, &token)
        .await;
    assert!(matches!(missing, Err(GatewayError::NotFound(m)) if m.contains("PathNotFound")));
    let bad = bench
        .page(
            &gen2_listing(&fake, "a", false, 10),
            Some("bm9wZQ=="),
            &token,
        )
        .await;
    assert!(
        matches!(&bad, Err(GatewayError::InvalidArgument { field, .. }) if field == "continuation"),
        "{bad:?}"
    );
    fake.set_grant(Grant::only(["00000000-0000-0000-0000-000000000001"]));
    let denied = bench
        .page(&gen2_listing(&fake, "a", false, 10), None, &token)
        .await;
    assert!(
        matches!(denied, Err(GatewayError::PermissionDenied(m)) if m.contains("AuthorizationPermissionMismatch"))
    );
    let vault = bench.token("https://vault.azure.net");
    let wrong = bench
        .page(&gen2_listing(&fake, "a", false, 10), None, &vault)
        .await;
    assert!(
        matches!(wrong, Err(GatewayError::PermissionDenied(m)) if m.contains("InvalidAuthenticationInfo"))
    );
}
