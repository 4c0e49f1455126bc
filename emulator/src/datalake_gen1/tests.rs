//! ADLS Gen1 fake tests: WebHDFS operations, paging with `listSize` and
//! `listAfter`, the two-step CREATE, token and ACL refusals.

use super::*;
use crate::front_door::{
    testing::{Kit, OID, OTHER_OID},
    Fault,
};

async fn call(
    kit: &Kit,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = kit.http.request(method, url).body(body.to_vec());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn two_step_create_then_list_and_read() {
    let kit = Kit::new();
    let fake = DataLakeGen1Fake::start(Arc::clone(&kit.authority), &kit.ca)
        .await
        .unwrap();
    let token = kit.token_for(OID, DATALAKE_GEN1_AUDIENCE);
    let base = fake.account_url();
    let (status, headers, _) = call(
        &kit,
        reqwest::Method::PUT,
        &format!("{base}/webhdfs/v1/dir%20one/file.txt?op=CREATE&overwrite=true"),
        Some(&token),
        b"",
    )
    .await;
    assert_eq!(status, 307);
    assert_eq!(headers["x-ms-webhdfs-version"], WEBHDFS_VERSION);
    let location = headers["location"].to_str().unwrap().to_string();
    assert!(
        location.contains("op=CREATE") && location.ends_with("write=true"),
        "{location}"
    );
    let (status, _, _) = call(
        &kit,
        reqwest::Method::PUT,
        &location,
        Some(&token),
        b"hello",
    )
    .await;
    assert_eq!(status, 201);
    // Without overwrite a second create is refused.
    let (status, _, body) = call(
        &kit,
        reqwest::Method::PUT,
        &format!("{base}/webhdfs/v1/dir%20one/file.txt?op=CREATE&write=true"),
        Some(&token),
        b"again",
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        json(&body)["RemoteException"]["exception"],
        "FileAlreadyExistsException"
    );
    let (status, _, body) = call(
        &kit,
        reqwest::Method::PUT,
        &format!("{base}/webhdfs/v1/dir%20one/sub?op=MKDIRS"),
        Some(&token),
        b"",
    )
    .await;
    assert_eq!((status, json(&body)), (200, json!({"boolean": true})));

    let (status, _, body) = call(
        &kit,
        reqwest::Method::GET,
        &format!("{base}/webhdfs/v1/dir%20one?op=LISTSTATUS"),
        Some(&token),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let list = json(&body);
    let statuses = list["FileStatuses"]["FileStatus"].as_array().unwrap();
    assert_eq!(statuses.len(), 2);
    assert_eq!(statuses[0]["pathSuffix"], "file.txt");
    assert_eq!(statuses[0]["type"], "FILE");
    assert_eq!(statuses[0]["length"], 5);
    assert_eq!(statuses[0]["permission"], "770");
    assert_eq!(statuses[1]["pathSuffix"], "sub");
    assert_eq!(statuses[1]["type"], "DIRECTORY");
    assert_eq!(statuses[1]["blockSize"], 0);

    let (_, _, body) = call(
        &kit,
        reqwest::Method::GET,
        &format!("{base}/webhdfs/v1/dir%20one/file.txt?op=GETFILESTATUS&api-version=2016-11-01"),
        Some(&token),
        b"",
    )
    .await;
    assert_eq!(json(&body)["FileStatus"]["pathSuffix"], "");
    let (_, _, body) = call(
        &kit,
        reqwest::Method::GET,
        &format!("{base}/webhdfs/v1/dir%20one/file.txt?op=OPEN&read=true"),
        Some(&token),
        b"",
    )
    .await;
    assert_eq!(body, b"hello");
}

#[tokio::test]
async fn liststatus_pages_with_list_size_and_list_after() {
    let kit = Kit::new();
    let fake = DataLakeGen1Fake::start(Arc::clone(&kit.authority), &kit.ca)
        .await
        .unwrap();
    fake.add_generated_dir("/big", 10).unwrap();
    let token = kit.token_for(OID, DATALAKE_GEN1_AUDIENCE);
    let url = format!(
        "{}/webhdfs/v1/big?op=LISTSTATUS&listSize=4&listAfter=file-00000005",
        fake.account_url()
    );
    let (_, _, body) = call(&kit, reqwest::Method::GET, &url, Some(&token), b"").await;
    let names: Vec<String> = json(&body)["FileStatuses"]["FileStatus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pathSuffix"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "file-00000006",
            "file-00000007",
            "file-00000008",
            "file-00000009"
        ]
    );
}

#[tokio::test]
async fn errors_are_remote_exceptions_with_webhdfs_statuses() {
    let kit = Kit::new();
    let fake = DataLakeGen1Fake::start(Arc::clone(&kit.authority), &kit.ca)
        .await
        .unwrap();
    let token = kit.token_for(OID, DATALAKE_GEN1_AUDIENCE);
    let base = fake.account_url();
    let list = |path: &str| format!("{base}/webhdfs/v1{path}?op=LISTSTATUS");
    let (status, _, body) = call(
        &kit,
        reqwest::Method::GET,
        &list("/nope"),
        Some(&token),
        b"",
    )
    .await;
    assert_eq!(status, 404);
    let error = &json(&body)["RemoteException"];
    assert_eq!(error["exception"], "FileNotFoundException");
    assert_eq!(error["javaClassName"], "java.io.FileNotFoundException");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("File/Folder does not exist: /nope"));

    let (status, _, body) = call(
        &kit,
        reqwest::Method::GET,
        &format!("{base}/webhdfs/v1/?op=LISTSTATUS&listSize=zero"),
        Some(&token),
        b"",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        json(&body)["RemoteException"]["exception"],
        "IllegalArgumentException"
    );

    let vault_token = kit.token_for(OID, "https://vault.azure.net");
    let (status, _, body) = call(
        &kit,
        reqwest::Method::GET,
        &list("/"),
        Some(&vault_token),
        b"",
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        json(&body)["RemoteException"]["exception"],
        "SecurityException"
    );
    assert_eq!(
        call(&kit, reqwest::Method::GET, &list("/"), None, b"")
            .await
            .0,
        401
    );
    // The audience is exact: no trailing slash, no entry.
    let no_slash = kit.token_for(OID, "https://datalake.azure.net");
    assert_eq!(
        call(&kit, reqwest::Method::GET, &list("/"), Some(&no_slash), b"")
            .await
            .0,
        401
    );

    fake.set_grant(Grant::only([OTHER_OID]));
    let (status, _, body) = call(&kit, reqwest::Method::GET, &list("/"), Some(&token), b"").await;
    assert_eq!(status, 403);
    assert_eq!(
        json(&body)["RemoteException"]["exception"],
        "AccessControlException"
    );

    fake.set_grant(Grant::Everyone);
    fake.faults().push([Fault::throttle(1)]);
    let (status, headers, body) =
        call(&kit, reqwest::Method::GET, &list("/"), Some(&token), b"").await;
    assert_eq!(
        (status, headers["retry-after"].to_str().unwrap()),
        (429, "1")
    );
    assert_eq!(
        json(&body)["RemoteException"]["exception"],
        "ThrottledException"
    );
    let audiences: Vec<Option<String>> = fake.requests().into_iter().map(|r| r.audience).collect();
    assert_eq!(audiences[2].as_deref(), Some("https://vault.azure.net"));
}

#[test]
fn paths_are_decoded_and_checked() {
    let uri: Uri = "/webhdfs/v1/a%20b/c?op=LISTSTATUS".parse().unwrap();
    let (key, display) = fs_path(&uri).unwrap();
    assert_eq!(key, ["a b", "c"]);
    assert_eq!(display, "/a b/c");
    let root: Uri = "/webhdfs/v1?op=LISTSTATUS".parse().unwrap();
    assert!(fs_path(&root).unwrap().0.is_empty());
    for bad in ["/webhdfs/v2/a", "/webhdfs/v1x", "/webhdfs/v1/a/../b"] {
        let uri: Uri = bad.parse().unwrap();
        assert!(fs_path(&uri).is_err(), "{bad}");
    }
}

#[test]
fn file_status_uses_the_wire_field_names() {
    let mut tree = Tree::new("o", "g");
    tree.create_file(&["f.csv".to_string()], vec![0; 10], false, Some(0o640))
        .unwrap();
    let entry = tree.get(&["f.csv".to_string()]).unwrap();
    let status = file_status(&entry);
    assert_eq!(status["type"], "FILE");
    assert_eq!(status["permission"], "640");
    assert_eq!(status["length"], 10);
    assert_eq!(status["blockSize"], 268_435_456u64);
    assert_eq!(status["pathSuffix"], "f.csv");
    assert!(status["modificationTime"].as_u64().unwrap() > 1_600_000_000_000);
}
