//! One call on a Kurento pipeline, without IO: the steps the tutorial's
//! `CallMediaPipeline` takes, in the order kurento-client 7.3.0 sends them.
//!
//! 1. `create` MediaPipeline;
//! 2. `create` the caller's WebRtcEndpoint (EA);
//! 3. EA's queued `addIceCandidate`s, `create` the callee's (EB);
//! 4. `subscribe` IceCandidateFound on EA, EB's queued candidates,
//!    `subscribe` on EB;
//! 5. `connect` EA → EB;
//! 6. `connect` EB → EA, `processOffer` and `gatherCandidates` on EA;
//! 7. once EA answered: `processOffer` and `gatherCandidates` on EB.
//!
//! The session ([`super::session`]) sends the requests and hands back the
//! replies; every reply is checked, and the first failure fails the call
//! (once). Whatever happens, the pipeline is released once the call core
//! says so, as soon as its id is known.

use serde_json::{Value, json};
use shared_proto::IceCandidate;

use super::rpc::{RpcError, value_str};
use crate::media::{CallId, Leg, MediaError, MediaEvent};

/// What a request of a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CreatePipeline,
    CreateEndpoint(Leg),
    AddCandidate(Leg),
    Subscribe(Leg),
    /// `connect` with this leg's endpoint as the source.
    Connect(Leg),
    ProcessOffer(Leg),
    Gather(Leg),
    Release,
}

impl Step {
    /// For the users: what the media server did not do.
    pub fn what(self) -> String {
        match self {
            Step::CreatePipeline => "create MediaPipeline".into(),
            Step::CreateEndpoint(l) => format!("create WebRtcEndpoint for the {l}"),
            Step::AddCandidate(l) => format!("addIceCandidate for the {l}"),
            Step::Subscribe(l) => format!("subscribe IceCandidateFound for the {l}"),
            Step::Connect(l) => format!("connect {l} to {}", l.other()),
            Step::ProcessOffer(l) => format!("processOffer for the {l}"),
            Step::Gather(l) => format!("gatherCandidates for the {l}"),
            Step::Release => "release MediaPipeline".into(),
        }
    }
}

/// A request to send: `method` and `params` without the `sessionId`.
#[derive(Debug, Clone, PartialEq)]
pub struct Req {
    pub step: Step,
    pub method: &'static str,
    pub params: Option<Value>,
}

/// What the call wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOut {
    Req(Req),
    Event(MediaEvent),
    /// This endpoint id now belongs to this leg (for its events).
    Endpoint(Leg, String),
}

fn invoke(step: Step, object: &str, operation: &str, params: Option<Value>) -> Req {
    let mut p = json!({ "object": object, "operation": operation });
    if let Some(op) = params {
        p["operationParams"] = op;
    }
    Req { step, method: "invoke", params: Some(p) }
}

/// `addIceCandidate`'s candidate, typed as kurento-client types it. KMS
/// wants `sdpMid` as a string and `sdpMLineIndex` as a number: a client
/// that sent only one of them gets the other derived from it.
pub fn candidate_param(c: &IceCandidate) -> Value {
    let index = c.sdp_mline_index.or_else(|| c.sdp_mid.as_deref().and_then(|m| m.parse().ok())).unwrap_or(0);
    let mid = c.sdp_mid.clone().unwrap_or_else(|| index.to_string());
    json!({ "candidate": {
        "candidate": c.candidate,
        "sdpMid": mid,
        "sdpMLineIndex": index,
        "__module__": "kurento",
        "__type__": "IceCandidate",
    }})
}

/// The candidate of an `IceCandidateFound` event's data.
pub fn candidate_of_event(data: &Value) -> Option<IceCandidate> {
    let c = data.get("candidate")?;
    let candidate = c.get("candidate")?.as_str()?;
    let mid = c.get("sdpMid").and_then(Value::as_str).map(str::to_owned);
    let index = c.get("sdpMLineIndex").and_then(Value::as_u64).and_then(|i| u16::try_from(i).ok());
    Some(IceCandidate::new(candidate, mid, index))
}

/// One call's progress.
#[derive(Debug)]
pub struct CallCore {
    id: CallId,
    offers: [Option<String>; 2],
    pipeline: Option<String>,
    endpoints: [Option<String>; 2],
    /// Candidates waiting for their leg's endpoint.
    queued: [Vec<IceCandidate>; 2],
    subscribed: [bool; 2],
    connected: [bool; 2],
    answered: [bool; 2],
    gathering: [bool; 2],
    failed: bool,
    released: bool,
    /// The pipeline's `release` went out (or there is nothing to release).
    done: bool,
}

impl CallCore {
    /// A new call; the first request is `create` MediaPipeline.
    pub fn start(id: CallId, caller_offer: String, callee_offer: String) -> (CallCore, Vec<CallOut>) {
        let core = CallCore {
            id,
            offers: [Some(caller_offer), Some(callee_offer)],
            pipeline: None,
            endpoints: [None, None],
            queued: [Vec::new(), Vec::new()],
            subscribed: [false; 2],
            connected: [false; 2],
            answered: [false; 2],
            gathering: [false; 2],
            failed: false,
            released: false,
            done: false,
        };
        let req = Req {
            step: Step::CreatePipeline,
            method: "create",
            params: Some(json!({ "type": "MediaPipeline", "properties": {} })),
        };
        (core, vec![CallOut::Req(req)])
    }

    pub fn id(&self) -> CallId {
        self.id
    }

    pub fn pipeline(&self) -> Option<&str> {
        self.pipeline.as_deref()
    }

    /// Released, and nothing is left to do for it.
    pub fn finished(&self) -> bool {
        self.done
    }

    /// Ended for the users (failed or released): no more events.
    pub fn ended(&self) -> bool {
        self.failed || self.released
    }

    fn ep(&self, leg: Leg) -> &str {
        self.endpoints[leg.index()].as_deref().unwrap_or_default()
    }

    fn create_endpoint(&self, leg: Leg) -> CallOut {
        CallOut::Req(Req {
            step: Step::CreateEndpoint(leg),
            method: "create",
            params: Some(json!({
                "type": "WebRtcEndpoint",
                "constructorParams": { "mediaPipeline": self.pipeline.as_deref().unwrap_or_default() },
                "properties": {},
            })),
        })
    }

    fn subscribe(&self, leg: Leg) -> CallOut {
        CallOut::Req(Req {
            step: Step::Subscribe(leg),
            method: "subscribe",
            params: Some(json!({ "object": self.ep(leg), "type": "IceCandidateFound" })),
        })
    }

    fn add_candidate_req(&self, leg: Leg, c: &IceCandidate) -> CallOut {
        CallOut::Req(invoke(Step::AddCandidate(leg), self.ep(leg), "addIceCandidate", Some(candidate_param(c))))
    }

    fn flush(&mut self, leg: Leg, out: &mut Vec<CallOut>) {
        for c in std::mem::take(&mut self.queued[leg.index()]) {
            out.push(self.add_candidate_req(leg, &c));
        }
    }

    fn offer_and_gather(&mut self, leg: Leg, out: &mut Vec<CallOut>) {
        let offer = self.offers[leg.index()].take().unwrap_or_default();
        out.push(CallOut::Req(invoke(
            Step::ProcessOffer(leg),
            self.ep(leg),
            "processOffer",
            Some(json!({ "offer": offer })),
        )));
        out.push(CallOut::Req(invoke(Step::Gather(leg), self.ep(leg), "gatherCandidates", None)));
    }

    fn release_req(&mut self) -> Vec<CallOut> {
        self.done = true;
        match &self.pipeline {
            Some(p) => {
                vec![CallOut::Req(Req { step: Step::Release, method: "release", params: Some(json!({ "object": p })) })]
            }
            None => vec![],
        }
    }

    /// The call cannot go on: tells the users once.
    pub fn fail(&mut self, error: MediaError) -> Vec<CallOut> {
        if self.ended() {
            return vec![];
        }
        self.failed = true;
        vec![CallOut::Event(MediaEvent::Failed { call: self.id, error })]
    }

    /// The answer to a request of `step`.
    pub fn on_reply(&mut self, step: Step, outcome: Result<Value, RpcError>) -> Vec<CallOut> {
        let result = match outcome {
            Ok(r) => r,
            Err(e) => {
                if step == Step::CreatePipeline {
                    // Nothing was created: nothing to release.
                    self.pipeline_unknown();
                }
                return match step {
                    // The tutorial ignores these too: one bad candidate
                    // does not end a call.
                    Step::AddCandidate(_) | Step::Release => vec![],
                    _ => self.fail(MediaError::Refused { what: step.what(), code: e.code, message: e.message }),
                };
            }
        };
        match step {
            Step::CreatePipeline => {
                let Some(p) = value_str(&result) else {
                    self.pipeline_unknown();
                    return self.fail(no_value(step));
                };
                self.pipeline = Some(p.to_owned());
                if self.released {
                    return self.release_req();
                }
                if self.failed {
                    return vec![];
                }
                vec![self.create_endpoint(Leg::Caller)]
            }
            Step::CreateEndpoint(leg) => {
                if self.ended() {
                    return vec![];
                }
                let Some(e) = value_str(&result) else { return self.fail(no_value(step)) };
                self.endpoints[leg.index()] = Some(e.to_owned());
                let mut out = vec![CallOut::Endpoint(leg, e.to_owned())];
                match leg {
                    Leg::Caller => {
                        self.flush(Leg::Caller, &mut out);
                        out.push(self.create_endpoint(Leg::Callee));
                    }
                    Leg::Callee => {
                        out.push(self.subscribe(Leg::Caller));
                        self.flush(Leg::Callee, &mut out);
                        out.push(self.subscribe(Leg::Callee));
                    }
                }
                out
            }
            Step::Subscribe(leg) => {
                self.subscribed[leg.index()] = true;
                if self.ended() || self.subscribed != [true; 2] {
                    return vec![];
                }
                let sink = self.ep(Leg::Callee).to_owned();
                vec![CallOut::Req(invoke(
                    Step::Connect(Leg::Caller),
                    self.ep(Leg::Caller),
                    "connect",
                    Some(json!({ "sink": sink })),
                ))]
            }
            Step::Connect(leg) => {
                self.connected[leg.index()] = true;
                if self.ended() {
                    return vec![];
                }
                match leg {
                    Leg::Caller => {
                        let sink = self.ep(Leg::Caller).to_owned();
                        let mut out = vec![CallOut::Req(invoke(
                            Step::Connect(Leg::Callee),
                            self.ep(Leg::Callee),
                            "connect",
                            Some(json!({ "sink": sink })),
                        ))];
                        self.offer_and_gather(Leg::Caller, &mut out);
                        out
                    }
                    Leg::Callee => self.established(),
                }
            }
            Step::ProcessOffer(leg) => {
                if self.ended() {
                    return vec![];
                }
                let Some(sdp) = value_str(&result) else { return self.fail(no_value(step)) };
                self.answered[leg.index()] = true;
                let mut out = vec![CallOut::Event(MediaEvent::Answer { call: self.id, leg, sdp: sdp.to_owned() })];
                if leg == Leg::Caller {
                    self.offer_and_gather(Leg::Callee, &mut out);
                }
                out.extend(self.established());
                out
            }
            Step::Gather(leg) => {
                self.gathering[leg.index()] = true;
                if self.ended() {
                    return vec![];
                }
                self.established()
            }
            Step::AddCandidate(_) | Step::Release => vec![],
        }
    }

    /// Everything is connected, negotiated and gathering: the pipeline is
    /// up (Kurento's media flows from here; the tutorial asks no more).
    fn established(&self) -> Vec<CallOut> {
        if self.connected == [true; 2] && self.answered == [true; 2] && self.gathering == [true; 2] {
            vec![CallOut::Event(MediaEvent::Established { call: self.id })]
        } else {
            vec![]
        }
    }

    fn pipeline_unknown(&mut self) {
        if self.released {
            self.done = true;
        }
    }

    /// A request of `step` got no answer in time.
    pub fn on_timeout(&mut self, step: Step, after: std::time::Duration) -> Vec<CallOut> {
        if step == Step::CreatePipeline {
            // A late answer is released by the session.
            self.pipeline_unknown();
        }
        match step {
            Step::AddCandidate(_) | Step::Release => vec![],
            _ => self.fail(MediaError::Timeout { what: step.what(), after }),
        }
    }

    /// A client candidate: sent once its endpoint exists, kept until then.
    pub fn add_candidate(&mut self, leg: Leg, c: IceCandidate) -> Vec<CallOut> {
        if self.ended() || c.candidate.trim().is_empty() {
            // An empty candidate ("end of candidates") is nothing KMS takes.
            return vec![];
        }
        if self.endpoints[leg.index()].is_some() {
            vec![self.add_candidate_req(leg, &c)]
        } else {
            self.queued[leg.index()].push(c);
            vec![]
        }
    }

    /// The call core is done with the call: release its pipeline now, or
    /// as soon as its id is known.
    pub fn release(&mut self, create_in_flight: bool) -> Vec<CallOut> {
        if self.released {
            return vec![];
        }
        self.released = true;
        if self.pipeline.is_some() || !create_in_flight {
            return self.release_req();
        }
        vec![]
    }

    /// The pipeline is gone with its media server's session: nothing to
    /// release any more.
    pub fn forget_pipeline(&mut self) -> Option<String> {
        if self.released {
            // Its release (if any) is the session's business now.
            self.done = true;
        }
        self.pipeline.take()
    }

    /// A candidate the leg's endpoint found, for its user.
    pub fn on_candidate_found(&self, leg: Leg, data: &Value) -> Option<MediaEvent> {
        if self.ended() {
            return None;
        }
        Some(MediaEvent::Candidate { call: self.id, leg, candidate: candidate_of_event(data)? })
    }
}

fn no_value(step: Step) -> MediaError {
    MediaError::Internal(format!("the media server's answer to {} has no value", step.what()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: Value) -> Result<Value, RpcError> {
        Ok(json!({ "value": v, "sessionId": "S" }))
    }

    fn reqs(out: &[CallOut]) -> Vec<(Step, String)> {
        out.iter()
            .filter_map(|o| match o {
                CallOut::Req(r) => Some((r.step, r.params.as_ref().map(|p| p.to_string()).unwrap_or_default())),
                _ => None,
            })
            .collect()
    }

    fn steps(out: &[CallOut]) -> Vec<Step> {
        reqs(out).into_iter().map(|(s, _)| s).collect()
    }

    fn cand(s: &str) -> IceCandidate {
        IceCandidate::new(s, Some("0".into()), Some(0))
    }

    #[test]
    fn the_tutorials_order_with_queued_candidates() {
        let (mut c, out) = CallCore::start(CallId(1), "offer-a".into(), "offer-b".into());
        assert_eq!(steps(&out), [Step::CreatePipeline]);
        assert!(c.add_candidate(Leg::Caller, cand("candidate:a")).is_empty());
        assert!(c.add_candidate(Leg::Callee, cand("candidate:b")).is_empty());
        let out = c.on_reply(Step::CreatePipeline, ok(json!("P_kurento.MediaPipeline")));
        assert_eq!(steps(&out), [Step::CreateEndpoint(Leg::Caller)]);
        assert!(reqs(&out)[0].1.contains(r#""mediaPipeline":"P_kurento.MediaPipeline""#));
        let out = c.on_reply(Step::CreateEndpoint(Leg::Caller), ok(json!("P/EA")));
        assert_eq!(steps(&out), [Step::AddCandidate(Leg::Caller), Step::CreateEndpoint(Leg::Callee)]);
        assert!(out.contains(&CallOut::Endpoint(Leg::Caller, "P/EA".into())));
        // A candidate once its endpoint exists goes out at once.
        assert_eq!(steps(&c.add_candidate(Leg::Caller, cand("candidate:a2"))), [Step::AddCandidate(Leg::Caller)]);
        let out = c.on_reply(Step::CreateEndpoint(Leg::Callee), ok(json!("P/EB")));
        assert_eq!(
            steps(&out),
            [Step::Subscribe(Leg::Caller), Step::AddCandidate(Leg::Callee), Step::Subscribe(Leg::Callee)]
        );
        assert!(c.on_reply(Step::Subscribe(Leg::Caller), ok(json!("sub1"))).is_empty());
        let out = c.on_reply(Step::Subscribe(Leg::Callee), ok(json!("sub2")));
        assert_eq!(steps(&out), [Step::Connect(Leg::Caller)]);
        assert!(reqs(&out)[0].1.contains(r#""sink":"P/EB""#));
        let out = c.on_reply(Step::Connect(Leg::Caller), Ok(json!({"sessionId":"S"})));
        assert_eq!(
            steps(&out),
            [Step::Connect(Leg::Callee), Step::ProcessOffer(Leg::Caller), Step::Gather(Leg::Caller)]
        );
        assert!(reqs(&out)[1].1.contains("offer-a"));
        assert!(!reqs(&out)[2].1.contains("operationParams"));
        assert!(c.on_reply(Step::Connect(Leg::Callee), Ok(json!({"sessionId":"S"}))).is_empty());
        let out = c.on_reply(Step::ProcessOffer(Leg::Caller), ok(json!("answer-a")));
        assert_eq!(
            out[0],
            CallOut::Event(MediaEvent::Answer { call: CallId(1), leg: Leg::Caller, sdp: "answer-a".into() })
        );
        assert_eq!(steps(&out), [Step::ProcessOffer(Leg::Callee), Step::Gather(Leg::Callee)]);
        assert!(c.on_reply(Step::Gather(Leg::Caller), Ok(json!({}))).is_empty());
        let out = c.on_reply(Step::ProcessOffer(Leg::Callee), ok(json!("answer-b")));
        assert_eq!(
            out,
            [CallOut::Event(MediaEvent::Answer { call: CallId(1), leg: Leg::Callee, sdp: "answer-b".into() })]
        );
        assert_eq!(
            c.on_reply(Step::Gather(Leg::Callee), Ok(json!({}))),
            [CallOut::Event(MediaEvent::Established { call: CallId(1) })]
        );
        let out = c.release(false);
        assert_eq!(reqs(&out), [(Step::Release, r#"{"object":"P_kurento.MediaPipeline"}"#.to_owned())]);
        assert!(c.finished());
    }

    #[test]
    fn failures_are_told_once_and_the_pipeline_still_released() {
        let (mut c, _) = CallCore::start(CallId(2), "a".into(), "b".into());
        c.on_reply(Step::CreatePipeline, ok(json!("P")));
        let out = c.on_reply(Step::CreateEndpoint(Leg::Caller), Err(RpcError { code: 40009, message: "no".into() }));
        let CallOut::Event(MediaEvent::Failed { error, .. }) = &out[0] else { panic!("{out:?}") };
        assert_eq!(error.to_string(), "media server refused create WebRtcEndpoint for the caller: no (code 40009)");
        assert!(c.on_timeout(Step::CreateEndpoint(Leg::Callee), std::time::Duration::from_secs(4)).is_empty());
        assert_eq!(steps(&c.release(false)), [Step::Release]);
    }

    #[test]
    fn a_release_before_the_pipeline_exists_waits_for_its_id() {
        let (mut c, _) = CallCore::start(CallId(3), "a".into(), "b".into());
        assert!(c.release(true).is_empty());
        assert!(!c.finished());
        assert_eq!(steps(&c.on_reply(Step::CreatePipeline, ok(json!("P")))), [Step::Release]);
        assert!(c.finished());
        // Released before a create that failed: nothing to release.
        let (mut c, _) = CallCore::start(CallId(4), "a".into(), "b".into());
        c.release(true);
        assert!(c.on_reply(Step::CreatePipeline, Err(RpcError { code: 1, message: "x".into() })).is_empty());
        assert!(c.finished());
    }

    #[test]
    fn candidates_keep_kurentos_types() {
        let p = candidate_param(&IceCandidate::new("candidate:x", None, Some(1)));
        assert_eq!(
            p,
            json!({"candidate":{"candidate":"candidate:x","sdpMid":"1","sdpMLineIndex":1,"__module__":"kurento","__type__":"IceCandidate"}})
        );
        let data = json!({"candidate":{"__module__":"kurento","__type__":"IceCandidate","candidate":"candidate:y","sdpMLineIndex":0,"sdpMid":"0"}});
        assert_eq!(candidate_of_event(&data), Some(IceCandidate::new("candidate:y", Some("0".into()), Some(0))));
        assert_eq!(candidate_of_event(&json!({"candidate": 5})), None);
    }
}
