//! The map from each byte of normalised text back to the span of the original text it came
//! from, stored as runs rather than one entry per byte.
//!
//! Most normalised bytes are original bytes that only moved: byte `i` comes from `i + d` for a
//! shift `d` that changes only where something was removed (a double space, an apostrophe) or
//! merged (a stretched letter, a slang word, a decomposed character). So the map keeps one
//! [`Run`] per stretch of constant shape, and a lookup (needed only when a hit's evidence is
//! mapped back) is a binary search over the runs. Building it for ASCII text that needs no
//! removal is one run; a per-byte map cost ~16K instructions per bench round to fill.

/// A stretch of the map: byte `at + k` (for `k` below the next run's `at`) came from
/// `(start + k * step, end + k * step)`, with `step` 0 (every byte from one span) or 1 (bytes
/// copied one for one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    at: u32,
    start: u32,
    end: u32,
    step: u32,
}

/// For each byte of a normalised text, the byte span of the original text it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SpanMap {
    runs: Vec<Run>,
    len: u32,
}

impl SpanMap {
    /// The map of a text copied byte for byte from an original of `len` bytes.
    pub(crate) fn identity(len: usize) -> Self {
        let mut map = Self::default();
        map.push_run((0, 1), 1, len);
        map
    }

    /// How many bytes the map covers.
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the map covers no byte.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The original span of byte `i` (which must be below [`Self::len`]).
    pub(crate) fn get(&self, i: usize) -> (u32, u32) {
        let i = i as u32;
        let r = self.runs[self.runs.partition_point(|r| r.at <= i) - 1];
        let k = (i - r.at) * r.step;
        (r.start + k, r.end + k)
    }

    /// Appends one byte that came from `span`.
    pub(crate) fn push(&mut self, span: (u32, u32)) {
        if let Some(last) = self.runs.last_mut() {
            let k = self.len - last.at;
            if k == 1 && span == (last.start + 1, last.end + 1) {
                last.step = 1;
                self.len += 1;
                return;
            }
            if span == (last.start + k * last.step, last.end + k * last.step) {
                self.len += 1;
                return;
            }
        }
        self.runs.push(Run {
            at: self.len,
            start: span.0,
            end: span.1,
            step: 0,
        });
        self.len += 1;
    }

    /// Appends `n` bytes, the `k`-th of which came from `first` shifted by `k * step`.
    pub(crate) fn push_run(&mut self, first: (u32, u32), step: u32, n: usize) {
        if n == 0 {
            return;
        }
        self.push(first);
        let more = (n - 1) as u32;
        if more == 0 {
            return;
        }
        let last = self.runs.last_mut().expect("just pushed");
        if self.len - last.at == 1 {
            last.step = step;
        } else if last.step != step {
            self.runs.push(Run {
                at: self.len,
                start: first.0 + step,
                end: first.1 + step,
                step,
            });
        }
        self.len += more;
    }

    /// Appends the entries `from..to` of `other`, run by run.
    pub(crate) fn extend_from(&mut self, other: &SpanMap, from: usize, to: usize) {
        if from >= to {
            return;
        }
        let (from, to) = (from as u32, to as u32);
        let mut r = other.runs.partition_point(|r| r.at <= from) - 1;
        let mut at = from;
        while at < to {
            let run = other.runs[r];
            let run_end = other.runs.get(r + 1).map_or(other.len, |n| n.at);
            let stop = run_end.min(to);
            let k = (at - run.at) * run.step;
            self.push_run((run.start + k, run.end + k), run.step, (stop - at) as usize);
            at = stop;
            r += 1;
        }
    }

    /// One entry per byte, for tests that compare maps built different ways.
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<(u32, u32)> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_give_back_every_pushed_span() {
        let mut next = crate::engine::xorshift(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..2000 {
            let mut dense = Vec::new();
            let mut map = SpanMap::default();
            let mut at = 0u32;
            for _ in 0..(next() % 12) {
                let (width, step, n) = (1 + (next() % 3) as u32, (next() % 2) as u32, next() % 5);
                at += (next() % 3) as u32;
                if next() % 2 == 0 {
                    map.push_run((at, at + width), step, n as usize);
                } else {
                    (0..n as u32).for_each(|k| map.push((at + k * step, at + width + k * step)));
                }
                dense.extend((0..n as u32).map(|k| (at + k * step, at + width + k * step)));
                at += n as u32;
            }
            assert_eq!(map.to_vec(), dense);
            let (from, to) = (
                next() as usize % (dense.len() + 1),
                next() as usize % (dense.len() + 1),
            );
            let mut part = SpanMap::default();
            part.push((7, 9));
            part.extend_from(&map, from, to);
            let mut want = vec![(7, 9)];
            want.extend(dense.get(from..to).unwrap_or_default());
            assert_eq!(part.to_vec(), want);
        }
    }
}
