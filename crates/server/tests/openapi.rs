//! `openapi.yaml` and the router agree: every documented operation is routed (no fallback 404, no
//! 405), answered without credentials as the document says it is protected.

use pagewire_testkit::contract::EventContract;
use pagewire_testkit::TestApp;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn every_documented_operation_is_routed() -> TestResult {
    let document = EventContract::load()?.document().clone();
    let paths = document["paths"].as_object().ok_or("no paths")?;
    assert!(paths.len() > 15, "the document lists {} paths", paths.len());
    let app = TestApp::spawn().await?;
    let mut checked = 0;
    for (path, item) in paths {
        // Any value routes; these have the right shape too.
        let concrete = path
            .replace("{tenant_id}", "ten_01M84FW680X7D8DMTHSYD7CGPR")
            .replace("{endpoint_id}", "ep_01M84FYAXDSNXET57Z1AY5JTX9")
            .replace("{event_id}", "evt_01M84FYBGSEP014SJAZDGHD9ZM")
            .replace("{delivery_id}", "dlv_01M84FYBGTWDCJ5JEBFD34ZT1S")
            .replace("{key_id}", "key_01M84FYBGTWDCJ5JEBFD34ZT1T")
            .replace("{app_id}", "1234567890")
            .replace("{page_id}", "104872345678901")
            .replace("{inbound_id}", "inb_01M84FYBGTWDCJ5JEBFD34ZT1V");
        assert!(!concrete.contains('{'), "an unknown path parameter in {path}");
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(operation) = item.get(method) else { continue };
            let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())?;
            let response = app.client.request(method.clone(), app.url(&concrete)).send().await?;
            let status = response.status().as_u16();
            let body = response.text().await?;
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(
                !(status == 404 && body.contains("this route")),
                "{method} {path} is documented but not routed: {body}"
            );
            // Operations that need credentials refuse a request without them.
            let public = operation
                .get("security")
                .is_some_and(|s| s.as_array().is_some_and(Vec::is_empty));
            if !public {
                assert_eq!(
                    status, 401,
                    "{method} {path} answered {status} without credentials: {body}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} operations checked");
    Ok(())
}

/// The other direction too: the router's table and the document list the same `/v1` operations, so
/// a route added without documentation (or documentation left after a route is gone) fails here.
#[test]
fn the_document_and_the_router_list_the_same_operations() -> TestResult {
    use std::collections::BTreeSet;
    let document = EventContract::load()?.document().clone();
    let paths = document["paths"].as_object().ok_or("no paths")?;
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .filter(|(path, _)| path.starts_with("/v1/"))
        .flat_map(|(path, item)| {
            ["get", "post", "put", "patch", "delete"]
                .into_iter()
                .filter(|method| item.get(*method).is_some())
                .map(|method| (method.to_owned(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = pagewire_server::admin::ROUTES
        .iter()
        .map(|(method, path)| ((*method).to_owned(), (*path).to_owned()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routed but not in openapi.yaml: {undocumented:?}"
    );
    assert!(unrouted.is_empty(), "in openapi.yaml but not routed: {unrouted:?}");
    Ok(())
}

/// Every error code the API can answer is listed in the `Problem` schema's enum.
#[test]
fn every_error_code_is_documented() -> TestResult {
    use pagewire_graph::GraphError;
    use pagewire_server::error::ApiError;
    let document = EventContract::load()?.document().clone();
    let listed: Vec<&str> = document
        .pointer("/components/schemas/Problem/properties/code/enum")
        .and_then(|e| e.as_array())
        .ok_or("no code enum")?
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    let graph = |e: GraphError| ApiError::Graph(e);
    let errors = [
        ApiError::Unauthorized,
        ApiError::Forbidden("x"),
        ApiError::NotFound("x"),
        ApiError::Validation(String::new()),
        ApiError::Conflict(String::new()),
        ApiError::InvalidJson(String::new()),
        ApiError::PayloadTooLarge,
        ApiError::Signature(pagewire_meta::SignatureError::Mismatch),
        ApiError::Unavailable,
        ApiError::RateLimited,
        ApiError::PageTaken("x"),
        ApiError::IdempotencyKeyReused,
        ApiError::IdempotencyInProgress,
        ApiError::internal(std::io::Error::other("x")),
        graph(GraphError::Network(String::new())),
        graph(GraphError::Decode(String::new())),
        graph(GraphError::InvalidToken {
            code: 190,
            subcode: None,
            message: String::new(),
            fbtrace_id: None,
        }),
        graph(GraphError::PermissionDenied {
            code: 200,
            message: String::new(),
            fbtrace_id: None,
        }),
        graph(GraphError::InvalidParameter {
            subcode: None,
            message: String::new(),
            fbtrace_id: None,
        }),
        graph(GraphError::RateLimited {
            code: Some(4),
            retry_after: None,
            message: String::new(),
            fbtrace_id: None,
        }),
    ];
    for error in &errors {
        assert!(
            listed.contains(&error.code()),
            "`{}` is not in openapi.yaml's Problem codes",
            error.code()
        );
    }
    Ok(())
}
