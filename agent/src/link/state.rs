//! The link's state as the rest of the agent sees it: in metrics
//! (`tributary_agent_link_state`), in `AgentStats::link_state`, in logs.

/// The link's state, as reported in metrics and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Sending the disk backlog (also the state at start).
    CatchingUp,
    /// Publishing as readings are taken.
    Live,
    /// Waiting out a backoff after a failure; messages go to disk.
    Spilling,
}

impl LinkState {
    /// The state's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Live => "live",
            LinkState::Spilling => "spilling",
            LinkState::CatchingUp => "catching_up",
        }
    }

    /// All states, in gauge order.
    pub const ALL: [LinkState; 3] = [LinkState::Live, LinkState::Spilling, LinkState::CatchingUp];

    pub(super) fn code(self) -> u8 {
        self as u8
    }

    /// The state stored by [`AgentStats::link_state`].
    pub fn from_code(code: u8) -> LinkState {
        match code {
            1 => LinkState::Live,
            2 => LinkState::Spilling,
            _ => LinkState::CatchingUp,
        }
    }
}
