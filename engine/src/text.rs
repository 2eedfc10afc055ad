//! Turns generated token pieces into text deltas: whole UTF-8 characters only,
//! and nothing that might be the start of a stop sequence until it is known
//! not to be one (OpenAI never shows any part of a stop sequence).

/// What one token added.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    /// Text now safe to show.
    pub text: String,
    /// A stop sequence was completed; generation ends here.
    pub stopped: bool,
}

/// Incremental decoder for one sequence.
#[derive(Debug, Default)]
pub struct TextDecoder {
    stops: Vec<String>,
    partial: Vec<u8>,
    held: String,
}

impl TextDecoder {
    /// A decoder that ends at any of `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Default::default()
        }
    }

    /// Adds one token's bytes.
    pub fn push(&mut self, piece: &[u8]) -> Delta {
        self.partial.extend_from_slice(piece);
        let valid = match std::str::from_utf8(&self.partial) {
            Ok(_) => self.partial.len(),
            // Invalid bytes (not just an unfinished character) are shown as
            // replacement characters rather than held forever.
            Err(e) if e.error_len().is_some() => self.partial.len(),
            Err(e) => e.valid_up_to(),
        };
        let rest = self.partial.split_off(valid);
        self.held
            .push_str(&String::from_utf8_lossy(&std::mem::replace(
                &mut self.partial,
                rest,
            )));
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let text = self.held[..at].to_string();
            self.held.clear();
            return Delta {
                text,
                stopped: true,
            };
        }
        let keep = self.longest_stop_prefix_suffix();
        let cut = self.held.len() - keep;
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        Delta {
            text,
            stopped: false,
        }
    }

    /// Whatever is still held back, once generation has ended without a stop.
    pub fn finish(&mut self) -> String {
        let mut text = std::mem::take(&mut self.held);
        text.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.partial)));
        text
    }

    /// Length in bytes of the longest suffix of the held text that begins
    /// some stop sequence.
    fn longest_stop_prefix_suffix(&self) -> usize {
        let held = self.held.as_str();
        let mut best = 0;
        for stop in &self.stops {
            for (i, _) in held.char_indices() {
                let suffix = &held[i..];
                if suffix.len() > best && stop.starts_with(suffix) {
                    best = suffix.len();
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (String, bool) {
        let mut d = TextDecoder::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let delta = d.push(p);
            out.push_str(&delta.text);
            if delta.stopped {
                return (out, true);
            }
        }
        out.push_str(&d.finish());
        (out, false)
    }

    #[test]
    fn plain_text_passes_through_at_once() {
        let mut d = TextDecoder::new(vec![]);
        assert_eq!(d.push(b"Hello").text, "Hello");
        assert_eq!(d.push(b" world").text, " world");
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn split_characters_wait_for_their_last_byte() {
        let euro = "€".as_bytes();
        let mut d = TextDecoder::new(vec![]);
        assert_eq!(d.push(&euro[..1]).text, "");
        assert_eq!(d.push(&euro[1..]).text, "€");
        assert_eq!(run(&[], &[b"a\xff", b"b"]).0, "a\u{fffd}b");
        assert_eq!(
            run(&[], &[&euro[..2]]).0,
            "\u{fffd}",
            "an unfinished tail is flushed"
        );
    }

    #[test]
    fn stop_sequences_are_cut_even_across_tokens() {
        assert_eq!(
            run(&["END"], &[b"one two E", b"N", b"D three"]),
            ("one two ".into(), true)
        );
        assert_eq!(run(&["\n\n"], &[b"a\n", b"\nb"]), ("a".into(), true));
        assert_eq!(
            run(&["xy", "b"], &[b"abxy"]),
            ("a".into(), true),
            "earliest stop wins"
        );
    }

    #[test]
    fn a_false_start_of_a_stop_is_released() {
        let mut d = TextDecoder::new(vec!["END".into()]);
        assert_eq!(d.push(b"to E").text, "to ");
        assert_eq!(d.push(b"X").text, "EX");
        assert_eq!(
            run(&["END"], &[b"EN"]),
            ("EN".into(), false),
            "held text is flushed at the end"
        );
    }
}
