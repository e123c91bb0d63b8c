//! The payment state machine.
//!
//! ```text
//! pending ──success──▶ succeeded ──refund──▶ partially_refunded ──refund──▶ refunded
//!    │ ──failure──▶ failed
//!    │ ──expiry───▶ expired
//!    └ ──cancel───▶ cancelled
//! ```
//!
//! Invariants: a final state never moves back to `pending` or to another outcome; a duplicate
//! of the event that produced the current state is recognised as such (idempotent); a success
//! that arrives after the payment ended without one is not a state change but a *late success*
//! (the money is held in suspense for refund). Every transition the store applies goes through
//! [`decide`], so an illegal one cannot be written.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Succeeded,
    Failed,
    Expired,
    Cancelled,
    Refunded,
    PartiallyRefunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Expired => "expired",
            PaymentStatus::Cancelled => "cancelled",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
        }
    }

    pub fn parse(s: &str) -> Option<PaymentStatus> {
        [
            PaymentStatus::Pending,
            PaymentStatus::Succeeded,
            PaymentStatus::Failed,
            PaymentStatus::Expired,
            PaymentStatus::Cancelled,
            PaymentStatus::Refunded,
            PaymentStatus::PartiallyRefunded,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Money was received for this payment (whatever happened to it since).
    pub fn money_received(self) -> bool {
        matches!(self, PaymentStatus::Succeeded | PaymentStatus::Refunded | PaymentStatus::PartiallyRefunded)
    }
}

/// What happened to a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentEvent {
    /// The provider confirmed the money moved.
    ProviderSucceeded,
    /// The provider reported a definitive failure (declined, cancelled by the payer…).
    ProviderFailed,
    /// `expires_at` passed without a confirmation.
    Expired,
    /// The payment was withdrawn (its notice was cancelled before the payer paid).
    Cancelled,
    /// The provider confirmed a refund; `fully` when nothing of the payment remains.
    RefundSettled { fully: bool },
}

/// The decision for an event in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Move to this state.
    MoveTo(PaymentStatus),
    /// Already in the state this event leads to (a duplicate): nothing to do.
    Duplicate,
    /// A stale or out-of-order event that would move a final state backwards: ignored.
    Stale,
    /// Money arrived after the payment ended without success: hold it in suspense for refund.
    LateSuccess,
}

/// The one place transitions are decided.
pub fn decide(current: PaymentStatus, event: PaymentEvent) -> Decision {
    use Decision::*;
    use PaymentEvent as E;
    use PaymentStatus as S;
    match (current, event) {
        (S::Pending, E::ProviderSucceeded) => MoveTo(S::Succeeded),
        (S::Pending, E::ProviderFailed) => MoveTo(S::Failed),
        (S::Pending, E::Expired) => MoveTo(S::Expired),
        (S::Pending, E::Cancelled) => MoveTo(S::Cancelled),
        (S::Succeeded | S::Refunded | S::PartiallyRefunded, E::ProviderSucceeded) => Duplicate,
        (S::Failed, E::ProviderFailed) | (S::Expired, E::Expired) | (S::Cancelled, E::Cancelled) => Duplicate,
        (S::Failed | S::Expired | S::Cancelled, E::ProviderSucceeded) => LateSuccess,
        (S::Succeeded | S::PartiallyRefunded, E::RefundSettled { fully: true }) => MoveTo(S::Refunded),
        (S::Succeeded | S::PartiallyRefunded, E::RefundSettled { fully: false }) => MoveTo(S::PartiallyRefunded),
        (_, _) => Stale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [PaymentStatus; 7] = [
        PaymentStatus::Pending,
        PaymentStatus::Succeeded,
        PaymentStatus::Failed,
        PaymentStatus::Expired,
        PaymentStatus::Cancelled,
        PaymentStatus::Refunded,
        PaymentStatus::PartiallyRefunded,
    ];
    const EVENTS: [PaymentEvent; 6] = [
        PaymentEvent::ProviderSucceeded,
        PaymentEvent::ProviderFailed,
        PaymentEvent::Expired,
        PaymentEvent::Cancelled,
        PaymentEvent::RefundSettled { fully: true },
        PaymentEvent::RefundSettled { fully: false },
    ];

    #[test]
    fn only_pending_moves_on_outcomes_and_only_paid_payments_on_refunds() {
        for s in ALL {
            for e in EVENTS {
                if let Decision::MoveTo(_) = decide(s, e) {
                    let refund = matches!(e, PaymentEvent::RefundSettled { .. });
                    let from_paid = matches!(s, PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded);
                    assert!((s == PaymentStatus::Pending && !refund) || (refund && from_paid), "{s:?} moved on {e:?}");
                }
            }
        }
        assert_eq!(
            decide(PaymentStatus::Refunded, PaymentEvent::RefundSettled { fully: true }),
            Decision::Stale,
            "a refunded payment is final"
        );
    }

    #[test]
    fn a_final_state_never_moves_backwards() {
        assert_eq!(decide(PaymentStatus::Succeeded, PaymentEvent::ProviderFailed), Decision::Stale);
        assert_eq!(decide(PaymentStatus::Succeeded, PaymentEvent::Expired), Decision::Stale);
        assert_eq!(decide(PaymentStatus::Failed, PaymentEvent::Expired), Decision::Stale);
        assert_eq!(decide(PaymentStatus::Expired, PaymentEvent::ProviderFailed), Decision::Stale);
    }

    #[test]
    fn duplicates_and_late_money_are_recognised() {
        assert_eq!(decide(PaymentStatus::Succeeded, PaymentEvent::ProviderSucceeded), Decision::Duplicate);
        assert_eq!(decide(PaymentStatus::Expired, PaymentEvent::ProviderSucceeded), Decision::LateSuccess);
        assert_eq!(decide(PaymentStatus::Failed, PaymentEvent::ProviderSucceeded), Decision::LateSuccess);
        assert_eq!(decide(PaymentStatus::Cancelled, PaymentEvent::ProviderSucceeded), Decision::LateSuccess);
    }

    #[test]
    fn statuses_round_trip() {
        for s in ALL {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
        }
    }
}
