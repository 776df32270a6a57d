//! Early wake-ups for the folder's poll: the folder is watched with inotify, and any entry
//! created, written and closed, renamed in or out, or deleted there wakes the poll at once
//! instead of at its next tick.
//!
//! An event only says "look now": the poll decides, by metadata and content, as it always
//! does, so nothing about what is read changes and a missed or spurious event costs at most a
//! tick. Every kind of edit moves an entry of the folder itself: an editor's write or its
//! temporary file and rename, `kubectl cp`, a ConfigMap volume's update (a new `..data`
//! symlink renamed over the old). Writes in progress are not events (`IN_MODIFY` is not
//! watched), and a burst of events is read as one after the folder has been quiet for
//! [`QUIET`] (at most [`MOST_WAIT`] from the first), so a file is read when its writer has
//! closed it.
//!
//! Where inotify is missing (not Linux, or out of watches) the poll's tick alone reads changes.

use std::time::Duration;

/// How long the folder must be quiet after an event before it is read.
pub(super) const QUIET: Duration = Duration::from_millis(10);

/// The longest an event waits for quiet: a folder written without pause is still read.
pub(super) const MOST_WAIT: Duration = Duration::from_millis(100);

#[cfg(target_os = "linux")]
pub(super) use linux::FolderEvents;

#[cfg(target_os = "linux")]
mod linux {
    use std::{io, path::Path};

    use futures_util::StreamExt;
    use inotify::{EventStream, Inotify, WatchMask};
    use tokio::time::Instant;

    use super::{MOST_WAIT, QUIET};

    /// The folder's changes, as wake-ups.
    pub(in crate::local) struct FolderEvents {
        events: EventStream<Vec<u8>>,
    }

    impl std::fmt::Debug for FolderEvents {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("FolderEvents")
        }
    }

    impl FolderEvents {
        /// Watches `dir`'s entries; an error when inotify cannot (the caller polls only).
        pub(in crate::local) fn watch(dir: &Path) -> io::Result<Self> {
            let inotify = Inotify::init()?;
            inotify.watches().add(
                dir,
                WatchMask::CLOSE_WRITE
                    | WatchMask::CREATE
                    | WatchMask::DELETE
                    | WatchMask::MOVED_FROM
                    | WatchMask::MOVED_TO
                    | WatchMask::DELETE_SELF
                    | WatchMask::MOVE_SELF,
            )?;
            // Room for a few dozen events per read; more wait in the kernel's queue (and a
            // queue overflow is one more event).
            let events = inotify.into_event_stream(vec![0u8; 4096])?;
            Ok(Self { events })
        }

        /// Returns once the folder changed and then stayed quiet for `QUIET` (or `MOST_WAIT`
        /// passed); an error when the watch ended (the folder itself was removed or moved,
        /// or inotify failed): the caller drops it and polls.
        pub(in crate::local) async fn changed(&mut self) -> io::Result<()> {
            let first = self.next().await?;
            let mut ended = first.is_gone();
            let deadline = Instant::now() + MOST_WAIT;
            while !ended {
                let quiet = (Instant::now() + QUIET).min(deadline);
                match tokio::time::timeout_at(quiet, self.next()).await {
                    Ok(event) => ended = event?.is_gone(),
                    Err(_) => break,
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            if ended {
                return Err(io::Error::other("the folder was removed or moved"));
            }
            Ok(())
        }

        async fn next(&mut self) -> io::Result<Seen> {
            match self.events.next().await {
                Some(Ok(event)) => Ok(Seen(event.mask)),
                Some(Err(e)) => Err(e),
                None => Err(io::Error::other("inotify closed")),
            }
        }
    }

    /// One event's kind.
    struct Seen(inotify::EventMask);

    impl Seen {
        /// The watched folder itself went away: no more events will come.
        fn is_gone(&self) -> bool {
            self.0.intersects(
                inotify::EventMask::DELETE_SELF
                    | inotify::EventMask::MOVE_SELF
                    | inotify::EventMask::IGNORED,
            )
        }
    }
}

/// Without inotify: never watching, so the poll's tick does it all.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub(super) struct FolderEvents;

#[cfg(not(target_os = "linux"))]
impl FolderEvents {
    pub(super) fn watch(_: &std::path::Path) -> std::io::Result<Self> {
        Err(std::io::Error::other("inotify is Linux only"))
    }

    pub(super) async fn changed(&mut self) -> std::io::Result<()> {
        std::future::pending().await
    }
}
