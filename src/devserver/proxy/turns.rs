//! Where requests and responses begin in a byte stream the proxy does not parse.
//!
//! HTTP/1.1 without pipelining alternates on a connection: the client sends a request, the
//! server answers it, and only then does the client send the next one. So bytes from the server
//! that follow bytes from the client start a response, and bytes from the client that follow
//! bytes from the server (or come first) start a request. A pipelining client, which sends
//! several requests before the first answer, would be seen as one request and one response;
//! neither the AWS SDK nor the other clients of the bench pipeline.
//!
//! A client sending `Expect: 100-continue` (curl, and the Go SDK behind rclone, for bodies over
//! 1-2 MB) waits for the interim `100 Continue` before its body: two requests and two responses
//! here, so two latencies, as a real network charges two round trips. The dev server charges
//! one: hyper sends the interim answer only after the server's latency sleep.

/// Which way bytes travel through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    ToUpstream,
    ToClient,
}

/// What bytes read from one side mean for the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    /// More of what this direction was already sending.
    Continued,
    /// The client speaks first, or after the server did: a new request.
    Request,
    /// The server speaks after the client did: a response, which waits the latency.
    Response,
    /// The server speaks before any request: nothing to answer, so no latency to wait.
    Unprompted,
}

impl Turn {
    /// Whether these bytes begin a new body, whose pacing starts afresh: a link that was idle
    /// (or busy the other way) banks no credit.
    pub(super) fn starts_body(self) -> bool {
        self != Turn::Continued
    }
}

/// The direction of the last bytes seen on one connection.
#[derive(Debug, Default)]
pub(super) struct Turns {
    last: Option<Direction>,
}

impl Turns {
    /// Notes bytes read for `direction` and tells what they start, if anything.
    pub(super) fn on_bytes(&mut self, direction: Direction) -> Turn {
        let previous = self.last.replace(direction);
        match (previous, direction) {
            (Some(previous), direction) if previous == direction => Turn::Continued,
            (_, Direction::ToUpstream) => Turn::Request,
            (Some(Direction::ToUpstream), Direction::ToClient) => Turn::Response,
            (_, Direction::ToClient) => Turn::Unprompted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Direction::{ToClient, ToUpstream};
    use super::*;

    #[test]
    fn keep_alive_requests_and_responses_alternate() {
        let mut turns = Turns::default();
        let seen: Vec<Turn> = [
            ToUpstream, ToUpstream, // request 1: headers, then its body
            ToClient, ToClient, ToClient,   // response 1 in three reads
            ToUpstream, // request 2
            ToClient,   // response 2
        ]
        .into_iter()
        .map(|direction| turns.on_bytes(direction))
        .collect();
        use Turn::*;
        assert_eq!(
            seen,
            [
                Request, Continued, Response, Continued, Continued, Request, Response
            ]
        );
    }

    #[test]
    fn a_server_speaking_first_is_no_response() {
        let mut turns = Turns::default();
        assert_eq!(turns.on_bytes(ToClient), Turn::Unprompted);
        assert_eq!(turns.on_bytes(ToClient), Turn::Continued);
        assert_eq!(turns.on_bytes(ToUpstream), Turn::Request);
        assert_eq!(turns.on_bytes(ToClient), Turn::Response);
    }

    #[test]
    fn only_the_first_bytes_of_a_turn_start_a_body() {
        assert!(Turn::Request.starts_body());
        assert!(Turn::Response.starts_body());
        assert!(Turn::Unprompted.starts_body());
        assert!(!Turn::Continued.starts_body());
    }
}
