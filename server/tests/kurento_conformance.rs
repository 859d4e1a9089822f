//! Structural conformance of `--media kurento` with kurento-client 7.3.0
//! (`shared/reference/kurento-client-7.3.md`): a scripted KMS logs every
//! frame the server sends for one call (with one browser candidate queued
//! before the callee accepts, as in the transcript's table), and each frame
//! must have the transcript's method, parameter keys, object ids (the ones
//! the KMS returned) and sessionId use. Values such as SDP, candidates and
//! ids may differ.

mod common;
mod kurento_support;

use std::collections::HashMap;

use kurento_support::fake_kms::{FakeKms, Logged};
use kurento_support::*;
use serde_json::{Value, json};

/// The transcript, one frame per row: `"<NAME>"` is a value that must be
/// the same wherever that name appears (and is checked against what the
/// KMS answered), `"<_...>"` any value.
fn transcript() -> Vec<Value> {
    let s = "<S>";
    let manager = "manager_ServerManager";
    let candidate = json!({"candidate":{"candidate":"<_c>","sdpMid":"<_m>","sdpMLineIndex":"<_i>","__module__":"kurento","__type__":"IceCandidate"}});
    let create_ep = |id: u64| json!({"jsonrpc":"2.0","id":id,"method":"create","params":{"type":"WebRtcEndpoint","constructorParams":{"mediaPipeline":"<P>"},"properties":{},"sessionId":s}});
    let invoke = |id: u64, object: &str, operation: &str, params: Option<Value>| {
        let mut p = json!({"object":object,"operation":operation,"sessionId":s});
        if let Some(op) = params {
            p["operationParams"] = op;
        }
        json!({"jsonrpc":"2.0","id":id,"method":"invoke","params":p})
    };
    let subscribe = |id: u64, object: &str| json!({"jsonrpc":"2.0","id":id,"method":"subscribe","params":{"object":object,"type":"IceCandidateFound","sessionId":s}});
    vec![
        json!({"jsonrpc":"2.0","id":0,"method":"ping","params":{"interval":"<_interval>"}}),
        json!({"jsonrpc":"2.0","id":1,"method":"describe","params":{"object":manager}}),
        invoke(2, manager, "getInfo", None),
        json!({"jsonrpc":"2.0","id":3,"method":"create","params":{"type":"MediaPipeline","properties":{},"sessionId":s}}),
        create_ep(4),
        invoke(5, "<EA>", "addIceCandidate", Some(candidate.clone())),
        create_ep(6),
        subscribe(7, "<EA>"),
        subscribe(8, "<EB>"),
        invoke(9, "<EA>", "connect", Some(json!({"sink":"<EB>"}))),
        invoke(10, "<EB>", "connect", Some(json!({"sink":"<EA>"}))),
        invoke(11, "<EA>", "processOffer", Some(json!({"offer":"<_offer_a>"}))),
        invoke(12, "<EA>", "gatherCandidates", None),
        invoke(13, "<EB>", "processOffer", Some(json!({"offer":"<_offer_b>"}))),
        invoke(14, "<EB>", "gatherCandidates", None),
        // Trickled during the call, the caller's then the callee's.
        invoke(15, "<EA>", "addIceCandidate", Some(candidate.clone())),
        invoke(16, "<EB>", "addIceCandidate", Some(candidate)),
        json!({"jsonrpc":"2.0","id":17,"method":"release","params":{"object":"<P>","sessionId":s}}),
    ]
}

/// Matches `got` against `want`, binding `"<NAME>"`s; the first
/// difference, with its path, as the error.
fn matches(want: &Value, got: &Value, vars: &mut HashMap<String, Value>, path: &str) -> Result<(), String> {
    if let Some(name) = want.as_str().and_then(|s| s.strip_prefix('<')).and_then(|s| s.strip_suffix('>')) {
        if name.starts_with('_') {
            return Ok(());
        }
        return match vars.get(name) {
            Some(v) if v == got => Ok(()),
            Some(v) => Err(format!("{path}: {got} where {name} = {v}")),
            None => {
                vars.insert(name.to_owned(), got.clone());
                Ok(())
            }
        };
    }
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            let mut wk: Vec<&String> = w.keys().collect();
            let mut gk: Vec<&String> = g.keys().collect();
            wk.sort();
            gk.sort();
            if wk != gk {
                return Err(format!("{path}: keys {gk:?}, the transcript has {wk:?}"));
            }
            for (k, v) in w {
                matches(v, &g[k], vars, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        _ if want == got => Ok(()),
        _ => Err(format!("{path}: {got}, the transcript has {want}")),
    }
}

/// The `result` the KMS sent for request `id`.
fn answer_to(sent: &[Logged], id: u64) -> Value {
    sent.iter().find(|l| l.frame["id"] == json!(id)).map(|l| l.frame["result"].clone()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn one_call_sends_what_kurento_client_sends() {
    let kms = FakeKms::start().await;
    let server = start_server(kurento(&[kms.uri()])).await;
    kms_up(&server, &kms.uri()).await;
    let (mut a, mut b) = ring(&server, "alice", "bob").await;
    // One browser candidate queued while the call rings.
    let cand = |n: u32| json!({"id":"onIceCandidate","candidate":{"candidate":format!("candidate:{n} 1 udp 2122260223 192.0.2.{n} 5000{n} typ host"),"sdpMid":"0","sdpMLineIndex":0}});
    a.send_json(cand(1)).await;
    accept(&mut b, "alice").await;
    // The KMS's candidates reach each user as the original sends them.
    let found = r#"{"id":"iceCandidate","candidate":{"candidate":"candidate:1 1 UDP 2015363327 192.0.2.10 41234 typ host","sdpMid":"0","sdpMLineIndex":0,"__module__":"kurento","__type__":"IceCandidate"}}"#;
    for (user, last) in [
        (&mut b, r#"{"id":"startCommunication","sdpAnswer":"v=0"#),
        (&mut a, r#"{"id":"callResponse","response":"accepted","sdpAnswer":"v=0"#),
    ] {
        let seen = user.recv_until(|m| !m.starts_with(r#"{"id":"iceCandidate""#)).await;
        assert!(seen.last().unwrap().starts_with(last), "{}: {seen:?}", user.name);
        if !seen.iter().any(|m| m == found) {
            let more = user.recv_until(|m| m == found).await;
            assert_eq!(more.len(), 1, "{}: {more:?}", user.name);
        }
    }
    // Trickled candidates, then the hang-up.
    kms.wait_for(DEADLINE, |f| f.iter().any(|l| l.key() == "invoke:gatherCandidates" && l.frame["id"] == json!(14)))
        .await
        .expect("the call's set-up");
    a.send_json(cand(2)).await;
    kms.wait_for(DEADLINE, |f| f.iter().filter(|l| l.key() == "invoke:addIceCandidate").count() == 2).await.unwrap();
    b.send_json(cand(3)).await;
    kms.wait_for(DEADLINE, |f| f.iter().filter(|l| l.key() == "invoke:addIceCandidate").count() == 3).await.unwrap();
    a.send(r#"{"id":"stop"}"#).await;
    kms.wait_for(DEADLINE, |f| f.iter().any(|l| l.method() == "release")).await.expect("release");

    let frames = kms.frames();
    // Keep-alive pings may fall anywhere: they carry no params (checked
    // here) and are left out of the comparison.
    let (pings, call): (Vec<&Logged>, Vec<&Logged>) =
        frames.iter().partition(|l| l.method() == "ping" && l.frame["id"] != json!(0));
    for p in &pings {
        assert_eq!(p.frame.get("params"), None, "a keep-alive ping: {}", p.frame);
    }
    let ids: Vec<Value> = call.iter().map(|l| l.frame["id"].clone()).collect();
    let want = transcript();
    let mut vars = HashMap::new();
    for (i, w) in want.iter().enumerate() {
        let Some(got) = call.get(i) else { panic!("frame {i} missing; the server sent {ids:?}") };
        // A keep-alive ping before a frame takes one id.
        let mut w = w.clone();
        let id = got.frame["id"].as_u64().expect("integer id");
        let shift = pings.iter().filter(|p| p.frame["id"].as_u64() < Some(id)).count() as u64;
        w["id"] = json!(w["id"].as_u64().unwrap() + shift);
        if let Err(e) = matches(&w, &got.frame, &mut vars, &format!("frame {i} ({})", got.key())) {
            panic!("{e}\nframes: {:#?}", call.iter().map(|l| &l.frame).collect::<Vec<_>>());
        }
    }
    assert_eq!(call.len(), want.len(), "more frames than the transcript's: {:?}", &call[want.len()..]);
    // Ids are integers from 0, one counter, every frame on one connection.
    let mut all_ids: Vec<u64> = frames.iter().map(|l| l.frame["id"].as_u64().expect("integer id")).collect();
    all_ids.sort_unstable();
    assert_eq!(all_ids, (0..frames.len() as u64).collect::<Vec<_>>());
    assert!(frames.iter().all(|l| l.conn == 0));
    // The ids used are the ones the KMS gave.
    let sent = kms.sent();
    let id_of = |l: &Logged| l.frame["id"].as_u64().unwrap();
    assert_eq!(vars["S"], answer_to(&sent, id_of(call[1]))["sessionId"], "sessionId from describe");
    assert_eq!(vars["P"], answer_to(&sent, id_of(call[3]))["value"], "the pipeline's id");
    assert_eq!(vars["EA"], answer_to(&sent, id_of(call[4]))["value"], "the caller's endpoint id");
    assert_eq!(vars["EB"], answer_to(&sent, id_of(call[6]))["value"], "the callee's endpoint id");
    let p = vars["P"].as_str().unwrap();
    assert!(p.ends_with("_kurento.MediaPipeline"));
    for ep in ["EA", "EB"] {
        let e = vars[ep].as_str().unwrap();
        assert!(e.starts_with(&format!("{p}/")) && e.ends_with("_kurento.WebRtcEndpoint"), "{e}");
    }
    // The values the users gave reach the right endpoints.
    assert_eq!(call[11].frame["params"]["operationParams"]["offer"], json!(OFFER_A));
    assert_eq!(call[13].frame["params"]["operationParams"]["offer"], json!(OFFER_B));
    for (i, n) in [(5, 1), (15, 2), (16, 3)] {
        let c = &call[i].frame["params"]["operationParams"]["candidate"];
        assert_eq!(c["candidate"], json!(format!("candidate:{n} 1 udp 2122260223 192.0.2.{n} 5000{n} typ host")));
        assert_eq!((c["sdpMid"].clone(), c["sdpMLineIndex"].clone()), (json!("0"), json!(0)));
    }
    assert_eq!(kms.live_pipelines(), 0);
    server.shutdown().await;
}
