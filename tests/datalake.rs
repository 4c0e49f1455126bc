//! ListDataLake through the socket against the ADLS Gen1 (WebHDFS) and Gen2
//! (dfs List Paths) fakes: entries and their fields, paging across
//! continuations (and resuming from one), a large folder streamed lazily,
//! not found / forbidden, audiences the service rejects, the exfiltration
//! guard, input validation and throttling.

use std::sync::Arc;

use identity_gateway_client::proto::{
    DataLakeEntry, DataLakeGeneration, ListDataLakeRequest, ListDataLakeResponse,
};
use identity_gateway_emulator::{
    datalake_gen1::{DataLakeGen1Fake, DATALAKE_GEN1_AUDIENCE, SAMPLE_OWNER},
    datalake_gen2::{DataLakeGen2Fake, SAMPLE_FILESYSTEM, STORAGE_AUDIENCE},
    faults::{Fault, Grant},
    sample,
};
use tonic::{Code, Status, Streaming};

use crate::common::{TestEnv, TestGateway};

async fn gen1(env: &TestEnv) -> DataLakeGen1Fake {
    DataLakeGen1Fake::sample(Arc::clone(&env.authority), &env.ca)
        .await
        .expect("start the Gen1 fake")
}

async fn gen2(env: &TestEnv) -> DataLakeGen2Fake {
    DataLakeGen2Fake::sample(Arc::clone(&env.authority), &env.ca)
        .await
        .expect("start the Gen2 fake")
}

fn gen1_request(fake: &DataLakeGen1Fake, path: &str) -> ListDataLakeRequest {
    ListDataLakeRequest {
        account_url: fake.account_url(),
        generation: DataLakeGeneration::Gen1.into(),
        path: path.into(),
        ..Default::default()
    }
}

fn gen2_request(fake: &DataLakeGen2Fake, path: &str, recursive: bool) -> ListDataLakeRequest {
    ListDataLakeRequest {
        account_url: fake.account_url(),
        generation: DataLakeGeneration::Gen2.into(),
        filesystem: SAMPLE_FILESYSTEM.into(),
        path: path.into(),
        recursive,
        ..Default::default()
    }
}

async fn open(
    gw: &TestGateway,
    request: ListDataLakeRequest,
) -> Result<Streaming<ListDataLakeResponse>, Status> {
    gw.client
        .rpc()
        .list_data_lake(request)
        .await
        .map(|r| r.into_inner())
}

/// Every page of a listing.
async fn pages(
    gw: &TestGateway,
    request: ListDataLakeRequest,
) -> Result<Vec<ListDataLakeResponse>, Status> {
    let mut stream = open(gw, request).await?;
    let mut pages = Vec::new();
    while let Some(page) = stream.message().await? {
        pages.push(page);
    }
    Ok(pages)
}

fn names(pages: &[ListDataLakeResponse]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| &p.entries)
        .map(|e| e.name.clone())
        .collect()
}

fn find<'a>(pages: &'a [ListDataLakeResponse], name: &str) -> &'a DataLakeEntry {
    pages
        .iter()
        .flat_map(|p| &p.entries)
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no entry {name}"))
}

#[tokio::test]
async fn gen1_lists_the_tutorial_folder_with_every_field() {
    let env = TestEnv::new().await;
    let fake = gen1(&env).await;
    let gw = env.start(env.config()).await;

    let root = pages(&gw, gen1_request(&fake, "/")).await.unwrap();
    assert_eq!(root.len(), 1);
    assert!(root[0].continuation.is_empty());
    assert_eq!(
        names(&root),
        ["TestFolder", "generated", "logs", "vehicle1_09142014.csv"]
    );
    let folder = find(&root, "TestFolder");
    assert!(folder.is_directory);
    assert_eq!(folder.length, 0);
    assert_eq!(folder.permissions, "770");
    assert_eq!(folder.owner, SAMPLE_OWNER);
    let csv = find(&root, "vehicle1_09142014.csv");
    assert!(!csv.is_directory);
    assert_eq!(csv.length, 76);
    let modified = csv.modified.as_ref().expect("modification time");
    assert!(
        modified.seconds > 1_700_000_000,
        "ms epoch converted: {modified:?}"
    );

    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].audience.as_deref(), Some(DATALAKE_GEN1_AUDIENCE));
    assert_eq!(seen[0].oid.as_deref(), Some(sample::SYSTEM_OBJECT_ID));
    assert_eq!(seen[0].query_param("op").as_deref(), Some("LISTSTATUS"));

    // A subfolder, by a path with and without slashes.
    let logs = pages(&gw, gen1_request(&fake, "logs/2024/")).await.unwrap();
    assert_eq!(names(&logs), ["01"]);
}

#[tokio::test]
async fn gen1_pages_across_list_after_and_resumes_from_a_continuation() {
    let env = TestEnv::new().await;
    let fake = gen1(&env).await;
    let gw = env.start(env.config()).await;

    let all = pages(&gw, gen1_request(&fake, "/generated")).await.unwrap();
    let sizes: Vec<usize> = all.iter().map(|p| p.entries.len()).collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    assert_eq!(all[0].continuation, "file-00000999");
    assert_eq!(all[1].continuation, "file-00001999");
    assert!(all[2].continuation.is_empty());
    let listed = names(&all);
    let expected: Vec<String> = (0..2500).map(|i| format!("file-{i:08}")).collect();
    assert_eq!(listed, expected);
    let after: Vec<Option<String>> = fake
        .requests()
        .iter()
        .map(|r| r.query_param("listAfter"))
        .collect();
    assert_eq!(
        after,
        [
            None,
            Some("file-00000999".into()),
            Some("file-00001999".into())
        ]
    );

    let resumed = pages(
        &gw,
        ListDataLakeRequest {
            continuation: all[0].continuation.clone(),
            page_size: 700,
            ..gen1_request(&fake, "/generated")
        },
    )
    .await
    .unwrap();
    let resumed = names(&resumed);
    assert_eq!(resumed.len(), 1500);
    assert_eq!(resumed[0], "file-00001000");
}

#[tokio::test]
async fn gen2_recursive_listing_follows_every_continuation() {
    let env = TestEnv::new().await;
    let fake = gen2(&env).await;
    let gw = env.start(env.config()).await;

    let request = ListDataLakeRequest {
        page_size: 400,
        ..gen2_request(&fake, "", true)
    };
    let all = pages(&gw, request).await.unwrap();
    let listed = names(&all);
    // 2,500 generated files + generated/ + raw/, raw/2024, raw/2024/01, raw/2024/02,
    // two events.json + curated/ and sales.parquet.
    assert_eq!(listed.len(), 2509);
    let unique: std::collections::BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "no entry twice");
    assert_eq!(all.len(), 7);
    assert!(all[..6]
        .iter()
        .all(|p| p.entries.len() == 400 && !p.continuation.is_empty()));
    assert!(all[6].continuation.is_empty());

    let parquet = find(&all, "curated/sales.parquet");
    assert_eq!((parquet.length, parquet.is_directory), (4096, false));
    assert_eq!(parquet.permissions, "rw-r-----");
    assert_eq!(parquet.owner, "$superuser");
    assert!(parquet.modified.as_ref().unwrap().seconds > 1_700_000_000);
    assert!(find(&all, "raw/2024").is_directory);

    // Each continuation went back to the service verbatim, with the Storage token.
    let seen = fake.requests();
    assert_eq!(seen.len(), 7);
    for (i, request) in seen.iter().enumerate() {
        assert_eq!(request.audience.as_deref(), Some(STORAGE_AUDIENCE));
        let expected = (i > 0).then(|| all[i - 1].continuation.clone());
        assert_eq!(request.query_param("continuation"), expected, "page {i}");
        assert_eq!(request.query_param("recursive").as_deref(), Some("true"));
        assert_eq!(request.query_param("maxResults").as_deref(), Some("400"));
    }
}

#[tokio::test]
async fn a_large_folder_is_streamed_one_upstream_page_at_a_time() {
    let env = TestEnv::new().await;
    let fake = DataLakeGen2Fake::start(Arc::clone(&env.authority), &env.ca)
        .await
        .unwrap();
    fake.add_generated_dir("big", "million", 1_000_000).unwrap();
    let gw = env.start(env.config()).await;

    let mut stream = open(
        &gw,
        ListDataLakeRequest {
            account_url: fake.account_url(),
            generation: DataLakeGeneration::Gen2.into(),
            filesystem: "big".into(),
            path: "million".into(),
            page_size: 5000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut received = 0;
    let mut last = String::new();
    for page in 1..=4usize {
        let message = stream.message().await.unwrap().expect("a page");
        assert_eq!(message.entries.len(), 5000);
        received += message.entries.len();
        last = message.entries.last().unwrap().name.clone();
        // An eager gateway would have fetched all 200 pages before the first
        // message; a lazy one is ahead of the client only by what HTTP/2 flow
        // control lets through: the client's 1 MiB stream window holds about
        // two ~400 KB pages, plus the one page the gateway has in hand.
        let fetched = fake.requests().len();
        assert!(
            fetched <= page + 5,
            "after {page} page(s) the gateway had fetched {fetched} upstream pages"
        );
    }
    assert_eq!(received, 20_000);
    assert_eq!(last, "million/file-00019999");
    drop(stream);
    assert!(fake.requests().len() < 12);
}

#[tokio::test]
async fn missing_paths_and_filesystems_are_not_found() {
    let env = TestEnv::new().await;
    let g1 = gen1(&env).await;
    let g2 = gen2(&env).await;
    let gw = env.start(env.config()).await;

    let err = pages(&gw, gen1_request(&g1, "/nope")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("FileNotFoundException"),
        "{}",
        err.message()
    );
    let err = pages(&gw, gen2_request(&g2, "nope", false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("PathNotFound"), "{}", err.message());
    let err = pages(
        &gw,
        ListDataLakeRequest {
            filesystem: "other".into(),
            ..gen2_request(&g2, "", false)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("FilesystemNotFound"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn forbidden_listings_say_rbac_or_acl() {
    let env = TestEnv::new().await;
    let g1 = gen1(&env).await;
    let g2 = gen2(&env).await;
    g1.set_grant(Grant::only(["00000000-0000-0000-0000-000000000001"]));
    g2.set_grant(Grant::only(["00000000-0000-0000-0000-000000000001"]));
    let gw = env.start(env.config()).await;

    let err = pages(&gw, gen2_request(&g2, "", false)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("RBAC"), "{}", err.message());
    let err = pages(&gw, gen1_request(&g1, "/")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("ACL"), "{}", err.message());
}

#[tokio::test]
async fn services_expecting_another_audience_reject_the_token() {
    let env = TestEnv::new().await;
    let g1 = gen1(&env).await;
    let g2 = gen2(&env).await;
    // The tutorial's pitfall: Gen1 wants the audience with its trailing slash.
    g1.set_audience("https://datalake.azure.net");
    g2.set_audiences(&["https://storage.azure.us/"]);
    let gw = env.start(env.config()).await;

    let err = pages(&gw, gen1_request(&g1, "/")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("rejected the identity's token"),
        "{}",
        err.message()
    );
    let seen = g1.requests();
    assert_eq!(
        (seen[0].status, seen[0].audience.as_deref()),
        (401, Some(DATALAKE_GEN1_AUDIENCE))
    );

    let err = pages(&gw, gen2_request(&g2, "", false)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("InvalidAuthenticationInfo"),
        "{}",
        err.message()
    );
    let seen = g2.requests();
    assert_eq!(
        (seen[0].status, seen[0].audience.as_deref()),
        (401, Some(STORAGE_AUDIENCE))
    );
}

#[tokio::test]
async fn hostile_account_hosts_are_refused_before_any_token_is_fetched() {
    let env = TestEnv::new().await;
    let gw = env.start(env.config()).await;
    for (url, generation) in [
        ("https://evil.example", DataLakeGeneration::Gen2),
        ("https://evil.example", DataLakeGeneration::Gen1),
        ("https://evil.example", DataLakeGeneration::Unspecified),
        (
            "https://acct.dfs.core.windows.net.evil.example",
            DataLakeGeneration::Unspecified,
        ),
        (
            "https://myadls.azuredatalakestore.net@evil.example",
            DataLakeGeneration::Unspecified,
        ),
        (
            "https://myadls.azuredatalakestore.net.evil.example",
            DataLakeGeneration::Gen1,
        ),
    ] {
        let err = pages(
            &gw,
            ListDataLakeRequest {
                account_url: url.into(),
                generation: generation.into(),
                filesystem: if generation == DataLakeGeneration::Gen1 {
                    ""
                } else {
                    "data"
                }
                .into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{url}");
        assert!(
            err.message().contains("account_url"),
            "{url}: {}",
            err.message()
        );
    }
    assert_eq!(env.imds.token_requests(), 0, "no token was fetched");
}

#[tokio::test]
async fn bad_inputs_are_rejected_naming_the_field() {
    let env = TestEnv::new().await;
    let g1 = gen1(&env).await;
    let g2 = gen2(&env).await;
    let gw = env.start(env.config()).await;
    let cases = [
        (
            ListDataLakeRequest {
                filesystem: "Bad_FS".into(),
                ..gen2_request(&g2, "", false)
            },
            "filesystem",
        ),
        (
            ListDataLakeRequest {
                filesystem: String::new(),
                ..gen2_request(&g2, "", false)
            },
            "filesystem",
        ),
        (
            ListDataLakeRequest {
                page_size: 5001,
                ..gen2_request(&g2, "", false)
            },
            "page_size",
        ),
        (gen2_request(&g2, "raw/../../etc", false), "path"),
        (
            ListDataLakeRequest {
                filesystem: "data".into(),
                ..gen1_request(&g1, "/")
            },
            "filesystem",
        ),
        (
            ListDataLakeRequest {
                recursive: true,
                ..gen1_request(&g1, "/")
            },
            "recursive",
        ),
        (
            ListDataLakeRequest {
                generation: DataLakeGeneration::Unspecified.into(),
                ..gen1_request(&g1, "/")
            },
            "generation",
        ),
        (
            ListDataLakeRequest {
                generation: 9,
                ..gen1_request(&g1, "/")
            },
            "generation",
        ),
        (
            ListDataLakeRequest {
                continuation: "a\u{7}b".into(),
                ..gen2_request(&g2, "", false)
            },
            "continuation",
        ),
        (
            ListDataLakeRequest {
                account_url: String::new(),
                ..gen2_request(&g2, "", false)
            },
            "account_url",
        ),
    ];
    for (request, field) in cases {
        let err = pages(&gw, request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(&format!("invalid {field}:")),
            "{field}: {}",
            err.message()
        );
    }
    assert!(g1.requests().is_empty() && g2.requests().is_empty());
    assert_eq!(env.imds.token_requests(), 0);

    // A continuation the service does not know is the caller's mistake too.
    let err = pages(
        &gw,
        ListDataLakeRequest {
            continuation: "bm90IGEgdG9rZW4=".into(),
            ..gen2_request(&g2, "", false)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("invalid continuation:"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn throttled_pages_are_retried() {
    let env = TestEnv::new().await;
    let g1 = gen1(&env).await;
    let g2 = gen2(&env).await;
    let (gw, clock) = env.start_manual(env.config()).await;

    g2.faults().push([Fault::throttle(1)]);
    let listed = pages(&gw, gen2_request(&g2, "raw", false)).await.unwrap();
    assert_eq!(names(&listed), ["raw/2024"]);
    let statuses: Vec<u16> = g2.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
    assert!(clock
        .backoffs()
        .contains(&std::time::Duration::from_secs(1)));

    g1.faults().push((0..10).map(|_| Fault::throttle(1)));
    let err = pages(&gw, gen1_request(&g1, "/")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(g1.requests().len(), 4);
}
