//! In-process scenarios on async tasks: the async adapters and the tokio driver.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use crate::inproc::{
    AsyncChannel, Chan, Conduit, Flume, Kanal, Msg, Msg256, Scenario, Tokio, TokioUnbounded,
    contender, open, per_message,
};
use crate::measure::Contender;

/// Async use of the same channel types.
pub(crate) trait AsyncChan: Chan {
    fn send_async<T: Msg>(tx: &Self::Tx<T>, msg: T) -> impl Future<Output = ()> + Send + '_;
    fn recv_async<T: Msg>(rx: &mut Self::Rx<T>) -> impl Future<Output = Option<T>> + Send + '_;
}

macro_rules! async_chan {
    ($ty:ident, send: |$t:ident, $m:ident| $send:expr, recv: |$r:ident| $recv:expr $(,)?) => {
        impl AsyncChan for $ty {
            async fn send_async<T: Msg>($t: &Self::Tx<T>, $m: T) {
                assert!($send.await.is_ok(), "receivers gone");
            }
            async fn recv_async<T: Msg>($r: &mut Self::Rx<T>) -> Option<T> {
                $recv
            }
        }
    };
}

async_chan!(Conduit, send: |tx, msg| tx.send_async(msg), recv: |rx| rx.recv_async().await.ok());
async_chan!(Flume, send: |tx, msg| tx.send_async(msg), recv: |rx| rx.recv_async().await.ok());
async_chan!(Kanal,
    send: |tx, msg| tx.as_async().send(msg), recv: |rx| rx.as_async().recv().await.ok());
async_chan!(AsyncChannel, send: |tx, msg| tx.send(msg), recv: |rx| rx.recv().await.ok());
async_chan!(Tokio, send: |tx, msg| tx.send(msg), recv: |rx| rx.recv().await);

// tokio's unbounded send does not wait: its result, as a future that is ready at once.
async_chan!(TokioUnbounded,
    send: |tx, msg| std::future::ready(tx.send(msg)), recv: |rx| rx.recv().await);

pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Tasks on the shared 2-worker runtime; the clock runs from spawning the first task to
/// the last consumer task's end (read by that task itself).
pub(crate) fn run_tasks<C: AsyncChan, T: Msg>(s: &Scenario, n: u64) -> Option<f64> {
    let (tx, rxs) = open::<C, T>(s)?;
    let per = (n / s.producers).max(1);
    let (start, end, sum) = runtime().block_on(async move {
        let start = Instant::now();
        let producers: Vec<_> = (0..s.producers)
            .map(|_| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    for i in 0..per {
                        C::send_async(&tx, T::new(i)).await;
                    }
                })
            })
            .collect();
        drop(tx);
        let consumers: Vec<_> = rxs
            .into_iter()
            .map(|mut rx| {
                tokio::spawn(async move {
                    let mut sum = 0u64;
                    while let Some(m) = C::recv_async(&mut rx).await {
                        sum += m.id();
                    }
                    (Instant::now(), sum)
                })
            })
            .collect();
        for p in producers {
            p.await.unwrap();
        }
        let (mut end, mut sum) = (start, 0);
        for c in consumers {
            let (e, n) = c.await.unwrap();
            end = end.max(e);
            sum += n;
        }
        (start, end, sum)
    });
    Some(per_message::<C>(s, per, sum, end - start))
}

pub(crate) fn tasks<C: AsyncChan>(s: &'static Scenario) -> Contender {
    contender(C::NAME, s, run_tasks::<C, u64>, run_tasks::<C, Msg256>)
}
