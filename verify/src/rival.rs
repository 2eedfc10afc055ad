//! The rival context: the request as a node that cuts a corner would run
//! it, and where a node's report sits between that and the request itself.
//!
//! A node that drops the system prompt answers from another context. Where
//! that context barely moves the claimed model's log-probs ("You are a
//! helpful assistant." against the template's own default), the move hides
//! in the rounding that honest nodes show, for any test that only asks how
//! far a report is from the reference. Asking which of the two contexts the
//! report is nearer takes only the component of the node's deviation along
//! the line between them: rounding spread over every direction keeps only
//! its share along that one line, while a cheat sits at the far end of it.

use serde_json::Value;

/// The request with its system messages removed, or `None` where it has
/// none, or nothing else (then there is no rival).
pub fn without_system(request: &Value) -> Option<Value> {
    let messages = request.get("messages")?.as_array()?;
    let is_system = |m: &Value| m.get("role").and_then(Value::as_str) == Some("system");
    if !messages.iter().any(is_system) || messages.iter().all(is_system) {
        return None;
    }
    let mut changed = request.clone();
    if let Some(messages) = changed.get_mut("messages").and_then(Value::as_array_mut) {
        messages.retain(|m| !is_system(m));
    }
    Some(changed)
}

/// Where a report sits on the line from the claimed context's log-probs to
/// the rival's, at one token: both sides centred over the node's reported
/// tokens, so a shift common to all of them (another normalisation) counts
/// for nothing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lean {
    /// How far the node's report lies from the claimed context's log-probs
    /// in the rival's direction (nats; negative: away from it).
    pub along: f32,
    /// How far apart the two contexts' log-probs are (nats).
    pub apart: f32,
}

impl Lean {
    /// Reads the lean from (reported, claimed context's, rival context's)
    /// log-probs of the same tokens; `None` with fewer than two tokens, a
    /// non-number, or contexts that agree exactly (no line to lean along).
    pub fn of(triples: &[[f32; 3]]) -> Option<Self> {
        if triples.len() < 2 || triples.iter().flatten().any(|v| !v.is_finite()) {
            return None;
        }
        let n = triples.len() as f32;
        let mean = |k: usize| triples.iter().map(|t| t[k] - t[1]).sum::<f32>() / n;
        let (shift, rival_shift) = (mean(0), mean(2));
        let deviation = triples.iter().map(|t| t[0] - t[1] - shift);
        let direction: Vec<f32> = triples.iter().map(|t| t[2] - t[1] - rival_shift).collect();
        let apart = direction.iter().map(|d| d * d).sum::<f32>().sqrt();
        if apart <= f32::EPSILON {
            return None;
        }
        let along = deviation.zip(&direction).map(|(e, d)| e * d).sum::<f32>() / apart;
        (along.is_finite() && apart.is_finite()).then_some(Self { along, apart })
    }

    /// Whether the report went more than `share` of the way to the rival
    /// (one half: it is nearer the rival than the claimed context).
    pub fn leans(&self, share: f32) -> bool {
        self.along > share * self.apart
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_system_messages_are_dropped() {
        let request = json!({"model": "m", "messages": [
            {"role": "system", "content": "Be a pirate."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Arr"},
            {"role": "user", "content": "Again"}]});
        let rival = without_system(&request).expect("a system message");
        let roles: Vec<&str> = rival["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["role"].as_str())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(rival["model"], "m");
        let plain = json!({"messages": [{"role": "user", "content": "Hi"}]});
        assert_eq!(without_system(&plain), None);
        let only = json!({"messages": [{"role": "system", "content": "Be terse."}]});
        assert_eq!(
            without_system(&only),
            None,
            "nothing would be left to answer"
        );
        assert_eq!(without_system(&json!({"prompt": "Hi"})), None);
    }

    #[test]
    fn the_lean_is_the_deviation_along_the_line_to_the_rival() {
        // The rival moves the first token up by 0.4 and the second down by
        // 0.4 (centred: +0.4, -0.4; 0.566 apart).
        let claimed = [-1.0, -2.0];
        let rival = [-0.6, -2.4];
        let lean = |reported: [f32; 2]| {
            let t: Vec<[f32; 3]> = (0..2)
                .map(|i| [reported[i], claimed[i], rival[i]])
                .collect();
            Lean::of(&t).expect("a lean")
        };
        let apart = 0.32f32.sqrt();
        // The report is the claimed context's, shifted: no lean.
        let honest = lean([-1.3, -2.3]);
        assert!(honest.along.abs() < 1e-6 && (honest.apart - apart).abs() < 1e-6);
        assert!(!honest.leans(0.5));
        // The report is the rival's, shifted: all the way.
        let cheat = lean([-0.7, -2.5]);
        assert!((cheat.along - apart).abs() < 1e-5, "{cheat:?}");
        assert!(cheat.leans(0.5) && cheat.leans(0.9));
        // Rounding across the line, not along it, leans nowhere.
        let across = Lean::of(&[[-0.9, -1.0, -0.6], [-1.9, -2.0, -2.4], [-3.2, -3.0, -3.0]])
            .expect("a lean");
        assert!(across.along.abs() < 0.2 && !across.leans(0.5), "{across:?}");
        // Away from the rival.
        assert!(lean([-1.2, -1.8]).along < 0.0);
    }

    #[test]
    fn no_lean_without_a_line_or_numbers() {
        assert_eq!(Lean::of(&[[-1.0, -1.0, -1.0]]), None, "one token");
        assert_eq!(
            Lean::of(&[[-1.0, -1.0, -1.5], [-2.0, -2.0, -2.5]]),
            None,
            "the rival only shifts every log-prob alike"
        );
        assert_eq!(
            Lean::of(&[[f32::NAN, -1.0, -0.6], [-2.0, -2.0, -2.4]]),
            None
        );
        assert_eq!(
            Lean::of(&[[-3e38, -1.0, -0.6], [3e38, -2.0, -2.4]]),
            None,
            "a report too large to weigh"
        );
    }
}
