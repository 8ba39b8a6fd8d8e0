//! Bounded fan-out: the sweep reads and checks clusters a few at a time, the sweep
//! benchmark seeds them the same way.

/// `work` for every item, at most `limit` at a time; the results in any order, or the first
/// error once every started task has ended (a panic in a task stays a panic).
pub async fn bounded<T, R, E, F, Fut>(items: Vec<T>, limit: usize, work: F) -> Result<Vec<R>, E>
where
    T: Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<R, E>> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = items.into_iter();
    let mut results = Vec::new();
    let mut first_error = None;
    loop {
        while tasks.len() < limit.max(1) {
            let Some(item) = pending.next() else { break };
            tasks.spawn(work(item));
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined {
            Ok(Ok(result)) => results.push(result),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => {}
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(results),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn never_more_than_the_limit_at_once_and_the_first_error_after_all_ended() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let result: Result<Vec<u32>, String> = bounded((0..20u32).collect(), 3, |n| {
            let (running, peak, finished) = (running.clone(), peak.clone(), finished.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                finished.fetch_add(1, Ordering::SeqCst);
                if n == 5 {
                    Err(format!("item {n}"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result, Err("item 5".to_string()));
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(finished.load(Ordering::SeqCst), 20, "every item ran");
        let mut all: Vec<u32> = bounded(
            (0..10u32).collect(),
            4,
            |n| async move { Ok::<_, String>(n) },
        )
        .await
        .unwrap();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }
}
