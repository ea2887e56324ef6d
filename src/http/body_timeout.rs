//! The request body read bound: a body that has not fully arrived `HTTP_BODY_READ_TIMEOUT_MS`
//! after the request started being handled fails with a timed-out I/O error, which the body
//! extractors answer with 408 problem+json (`error::payload_error`). It keeps a slow client
//! (slowloris) from holding a worker's request and a buffer open for ever; the head has its own
//! bound (`HTTP_CLIENT_REQUEST_TIMEOUT_MS`, actix's client request timeout).

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::web::{self, Bytes};
use actix_web::HttpMessage;
use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::AppState;

/// A payload that fails once its deadline passes.
struct Bounded {
    inner: Payload,
    deadline: Pin<Box<tokio::time::Sleep>>,
    bound: Duration,
    expired: bool,
}

impl Stream for Bounded {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired = true;
            let ms = self.bound.as_millis();
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the request body did not arrive within {ms}ms"),
            )))));
        }
        Poll::Pending
    }
}

/// Middleware: bounds the time to read the request body.
pub async fn bound_body(
    mut req: ServiceRequest,
    next: actix_web::middleware::Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(bound) = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.limits.body_read_timeout)
    {
        let inner = req.take_payload();
        let bounded = Bounded {
            inner,
            deadline: Box::pin(tokio::time::sleep(bound)),
            bound,
            expired: false,
        };
        let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(bounded);
        req.set_payload(Payload::from(stream));
    }
    next.call(req).await
}
