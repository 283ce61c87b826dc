//! Leader election among the masters of `--initial-cluster`, decided by the same rule on every
//! master from what each peer reports about itself (no consensus protocol: on one machine all
//! masters see the same peers, so they agree within a poll or two).
//!
//! Each tick (100 ms) a master polls every peer and then calls [`Election::step`]:
//!
//! 1. A *claim* is a master saying "I lead for term T". The live claim with the highest term
//!    wins (ties go to the lower name), so a stale leader that comes back loses to a newer
//!    one, and a leader that sees a higher claim steps down.
//! 2. With no live claim, a leader that vanished without resigning (kill -9) is waited for
//!    until its lease runs out, as DM waits for the etcd lease of a crashed leader.
//! 3. Otherwise, with a quorum of healthy masters reachable and no one still waiting out a
//!    lease, the eligible reachable master with the lowest name claims the next term; the
//!    others adopt its claim on their next poll.
//! 4. A fresh cluster (no term claimed yet) first waits, for at most one lease from the
//!    master's start, until every member answers: masters started together then elect the
//!    lowest name whatever order their processes come up in, as tests and operators expect.
//!
//! A leader keeps leading while it is up and eligible, even when a lower-named master comes
//! back, so leadership never flaps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a master reports about itself, as seen by the master running the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ballot {
    pub name: String,
    /// Counts towards quorum (false with the `never-healthy` fault).
    pub healthy: bool,
    /// May lead: healthy, not evicted, not shutting down.
    pub eligible: bool,
    /// The highest term this master has seen.
    pub term: u64,
    /// `Some(term)` when it leads, for that term.
    pub claim: Option<u64>,
    /// Whether it still follows some leader (including one whose lease it is waiting out).
    pub follows_someone: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub name: String,
    pub term: u64,
    /// When its claim was last seen; the start of the lease once it vanishes.
    pub last_seen: Instant,
}

#[derive(Debug)]
pub struct Election {
    me: String,
    lease: Duration,
    term: u64,
    leader: Option<Leader>,
    /// Members that resigned, with the term they resigned from: their claims up to that term
    /// are stale even if a poll that raced the resignation still shows them.
    resigned: BTreeMap<String, u64>,
    /// Until when a fresh cluster waits for all its members before its first election.
    gathering_until: Instant,
}

impl Election {
    /// `gathering_until`: see rule 4 of the module doc.
    pub fn new(me: &str, lease: Duration, gathering_until: Instant) -> Election {
        Election {
            me: me.to_owned(),
            lease,
            term: 0,
            leader: None,
            resigned: BTreeMap::new(),
            gathering_until,
        }
    }

    pub fn leader(&self) -> Option<&Leader> {
        self.leader.as_ref()
    }

    pub fn leader_name(&self) -> Option<&str> {
        self.leader.as_ref().map(|leader| leader.name.as_str())
    }

    pub fn is_leader(&self) -> bool {
        self.leader_name() == Some(self.me.as_str())
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    /// This master's own claim, `Some(term)` while it leads.
    pub fn claim(&self) -> Option<u64> {
        self.leader.as_ref().filter(|leader| leader.name == self.me).map(|leader| leader.term)
    }

    /// Gives up leadership (eviction, shutdown, lost quorum); returns the term given up.
    pub fn resign(&mut self) -> Option<u64> {
        let term = self.claim()?;
        self.resigned.insert(self.me.clone(), term);
        self.leader = None;
        Some(term)
    }

    /// A peer announced it resigned from `term`: stop following it at once.
    pub fn peer_resigned(&mut self, name: &str, term: u64) {
        let recorded = self.resigned.entry(name.to_owned()).or_default();
        *recorded = (*recorded).max(term);
        if self.leader.as_ref().is_some_and(|leader| leader.name == name && leader.term <= term) {
            self.leader = None;
        }
    }

    /// One round of the rule above. `me` is this master's own ballot, `peers` the ballots of
    /// the peers that answered this tick, `cluster_size` how many masters the cluster has.
    pub fn step(&mut self, me: &Ballot, peers: &[Ballot], cluster_size: usize, now: Instant) {
        self.term = peers.iter().map(|p| p.term).fold(self.term, u64::max);

        // A leader that lost its quorum cannot renew its lease: it steps down at once.
        let healthy = peers.iter().filter(|p| p.healthy).count() + usize::from(me.healthy);
        let has_quorum = healthy > cluster_size / 2;
        if (!has_quorum || !me.eligible) && self.claim().is_some() {
            self.resign();
        }

        let own_claim = self.claim().map(|term| (self.me.as_str(), term));
        let peer_claims = peers
            .iter()
            .filter_map(|p| Some((p.name.as_str(), p.claim?)))
            .filter(|(name, term)| !self.is_stale(name, *term));
        let best = own_claim
            .into_iter()
            .chain(peer_claims)
            .max_by(|(a_name, a_term), (b_name, b_term)| {
                a_term.cmp(b_term).then_with(|| b_name.cmp(a_name))
            })
            .map(|(name, term)| (name.to_owned(), term));
        if let Some((name, term)) = best {
            self.leader = Some(Leader { name, term, last_seen: now });
            return;
        }

        // No live claim. A leader that answers but no longer claims has resigned; one that
        // does not answer may have crashed, and keeps its lease until it runs out.
        if let Some(leader) = &self.leader {
            let answers = peers.iter().any(|p| p.name == leader.name);
            let lease_left = now.duration_since(leader.last_seen) < self.lease;
            if leader.name != self.me && !answers && lease_left {
                return;
            }
            self.leader = None;
        }

        let someone_waits = peers.iter().any(|p| p.healthy && p.follows_someone);
        let everyone_answers = peers.len() + 1 >= cluster_size;
        let gathering = self.term == 0 && !everyone_answers && now < self.gathering_until;
        if !has_quorum || someone_waits || gathering {
            return;
        }
        let candidate = std::iter::once(me)
            .chain(peers)
            .filter(|ballot| ballot.eligible)
            .map(|ballot| ballot.name.as_str())
            .min();
        if candidate == Some(self.me.as_str()) {
            self.term += 1;
            self.leader = Some(Leader { name: self.me.clone(), term: self.term, last_seen: now });
        }
    }

    fn is_stale(&self, name: &str, term: u64) -> bool {
        self.resigned.get(name).is_some_and(|&resigned| term <= resigned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(3);

    /// An election whose gathering (rule 4) is already over.
    fn gathered(name: &str) -> Election {
        Election::new(name, LEASE, Instant::now())
    }

    fn ballot(name: &str, term: u64, claim: Option<u64>, follows: bool) -> Ballot {
        Ballot {
            name: name.to_owned(),
            healthy: true,
            eligible: true,
            term,
            claim,
            follows_someone: follows,
        }
    }

    #[test]
    fn the_lowest_eligible_name_wins_and_others_adopt_it() {
        let mut a = gathered("a");
        let mut b = gathered("b");
        let now = Instant::now();
        b.step(&ballot("b", 0, None, false), &[ballot("a", 0, None, false)], 3, now);
        assert_eq!(b.leader_name(), None, "b waits for a to claim");
        a.step(&ballot("a", 0, None, false), &[ballot("b", 0, None, false)], 3, now);
        assert!(a.is_leader());
        b.step(&ballot("b", 0, None, false), &[ballot("a", 1, Some(1), true)], 3, now);
        assert_eq!(b.leader_name(), Some("a"));
    }

    #[test]
    fn no_quorum_no_leader() {
        let mut a = gathered("a");
        a.step(&ballot("a", 0, None, false), &[], 3, Instant::now());
        assert_eq!(a.leader_name(), None);
    }

    #[test]
    fn a_vanished_leader_is_waited_for_until_its_lease_ends() {
        let start = Instant::now();
        let mut b = gathered("b");
        let c = ballot("c", 1, None, true);
        b.step(&ballot("b", 0, None, false), &[ballot("a", 1, Some(1), true), c.clone()], 3, start);
        b.step(
            &ballot("b", 1, None, true),
            std::slice::from_ref(&c),
            3,
            start + Duration::from_secs(1),
        );
        assert_eq!(b.leader_name(), Some("a"), "within the lease");
        b.step(&ballot("b", 1, None, true), &[ballot("c", 1, None, false)], 3, start + LEASE);
        assert!(b.is_leader(), "after the lease b, now the lowest, leads");
        assert_eq!(b.term(), 2);
    }

    #[test]
    fn a_resigned_claim_seen_late_is_stale() {
        let now = Instant::now();
        let mut b = gathered("b");
        b.peer_resigned("a", 1);
        b.step(&ballot("b", 1, None, false), &[ballot("a", 1, Some(1), true)], 3, now);
        assert_ne!(b.leader_name(), Some("a"));
    }

    #[test]
    fn a_higher_term_beats_a_lower_name() {
        let now = Instant::now();
        let mut a = gathered("a");
        a.step(&ballot("a", 0, None, false), &[ballot("b", 0, None, false)], 2, now);
        assert!(a.is_leader());
        a.step(&ballot("a", 1, Some(1), true), &[ballot("b", 2, Some(2), true)], 2, now);
        assert_eq!(a.leader_name(), Some("b"));
    }

    #[test]
    fn an_ineligible_leader_steps_down() {
        let now = Instant::now();
        let mut a = gathered("a");
        let peers = [ballot("b", 0, None, false)];
        a.step(&ballot("a", 0, None, false), &peers, 2, now);
        assert!(a.is_leader());
        let mut evicted = ballot("a", 1, Some(1), true);
        evicted.eligible = false;
        a.step(&evicted, &peers, 2, now);
        assert_eq!(a.leader_name(), None);
    }

    #[test]
    fn a_fresh_cluster_waits_for_every_member_until_its_gathering_ends() {
        let start = Instant::now();
        let mut b = Election::new("b", LEASE, start + LEASE);
        let c = ballot("c", 0, None, false);
        b.step(&ballot("b", 0, None, false), std::slice::from_ref(&c), 3, start);
        assert_eq!(b.leader_name(), None, "a has not answered yet");
        b.step(&ballot("b", 0, None, false), &[ballot("a", 0, None, false), c.clone()], 3, start);
        assert_eq!(b.leader_name(), None, "a answers and, being the lowest, will claim");
        b.step(&ballot("b", 0, None, false), std::slice::from_ref(&c), 3, start + LEASE);
        assert!(b.is_leader(), "once the gathering is over a quorum elects without a");
    }

    #[test]
    fn a_cluster_that_has_had_a_leader_does_not_gather_again() {
        let start = Instant::now();
        let mut b = Election::new("b", LEASE, start + LEASE);
        let c = ballot("c", 1, None, false);
        b.step(&ballot("b", 1, None, false), std::slice::from_ref(&c), 3, start);
        assert!(b.is_leader(), "term 1 was claimed before: no waiting for a");
    }
}
