//! The read-only accessors that every shared-memory channel handle has, written once.

/// Defines `len`, `capacity`, `is_empty`, `is_full`, `is_disconnected`, `sender_count`,
/// `receiver_count`, `name` and `same_channel` on a handle type with an `ep: Endpoint`
/// field, each with a doctest:
/// - `$open`: the path that opens the handle type, as in `shm::Sender::<u8>`;
/// - `$slug`: names the doctests' channels (`doc-<slug>-<method>-<pid>`);
/// - `$peers`: the other side's handles, for the docs;
/// - `$sender`, `$receiver`: the paths of this kind's sender and receiver types;
/// - `$fill`: a statement that queues one message on channel `name`, whose handle of
///   this type is `end`.
macro_rules! endpoint_accessors {
    (
        $open:literal,
        $slug:literal,
        $peers:literal,
        $sender:literal,
        $receiver:literal,
        $fill:literal
    ) => {
        /// The number of messages queued (a snapshot).
        ///
        /// ```
        /// use conduit::shm;
        #[doc = concat!("let name = format!(\"doc-", $slug, "-len-{}\", std::process::id());")]
        #[doc = concat!("let end = ", $open, "::create(&name, 4)?;")]
        #[doc = $fill]
        /// assert_eq!(end.len(), 1);
        /// shm::unlink(&name)?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn len(&self) -> usize {
            self.ep.len()
        }

        /// The number of slots: always bounded, the capacity asked for rounded up to a
        /// power of two.
        ///
        /// ```
        /// use conduit::shm;
        #[doc = concat!("let name = format!(\"doc-", $slug, "-capacity-{}\", std::process::id());")]
        #[doc = concat!("let end = ", $open, "::create(&name, 3)?;")]
        /// assert_eq!(end.capacity(), 4);
        /// shm::unlink(&name)?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn capacity(&self) -> usize {
            self.ep.capacity()
        }

        /// Whether no message is queued.
        ///
        /// ```
        /// use conduit::shm;
        #[doc = concat!("let name = format!(\"doc-", $slug, "-is-empty-{}\", std::process::id());")]
        #[doc = concat!("let end = ", $open, "::create(&name, 4)?;")]
        /// assert!(end.is_empty());
        #[doc = $fill]
        /// assert!(!end.is_empty());
        /// shm::unlink(&name)?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// Whether every slot is taken.
        ///
        /// ```
        /// use conduit::shm;
        #[doc = concat!("let name = format!(\"doc-", $slug, "-is-full-{}\", std::process::id());")]
        #[doc = concat!("let end = ", $open, "::create(&name, 1)?;")]
        /// assert!(!end.is_full());
        #[doc = $fill]
        /// assert!(end.is_full());
        /// shm::unlink(&name)?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn is_full(&self) -> bool {
            self.len() == self.capacity()
        }

        #[doc = concat!("Whether ", $peers, " attached at some point and none is attached now (dead")]
        /// ones count until detected: see the [module docs](super#peers-and-crashes)). A
        /// side whose peers never attached is waiting for the first, not disconnected.
        ///
        /// ```
        /// use conduit::shm;
        #[doc = concat!("let name = format!(\"doc-", $slug, "-is-disconnected-{}\", std::process::id());")]
        #[doc = concat!("let end = ", $open, "::create(&name, 1)?;")]
        /// assert!(!end.is_disconnected());
        /// shm::unlink(&name)?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn is_disconnected(&self) -> bool {
            self.ep.is_disconnected()
        }

        /// The number of attached sender handle families, in all processes (each `open`
        /// or `create` counts once, however often it is cloned).
        ///
        /// ```
        /// use conduit::shm;
        #[doc = concat!("let name = format!(\"doc-", $slug, "-sender-count-{}\", std::process::id());")]
        #[doc = concat!("let end = ", $open, "::create(&name, 1)?;")]
        /// let before = end.sender_count();
        #[doc = concat!("let tx = ", $sender, "::open(&name)?;")]
        /// let _clone = tx.clone();
        /// assert_eq!(end.sender_count(), before + 1);
        /// shm::unlink(&name)?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn sender_count(&self) -> usize {
            self.ep.sender_count()
        }

        /// The number of attached receiver handle families, in all processes.
        ///
        /// ```
        /// use conduit::shm;
        #[doc = concat!("let name = format!(\"doc-", $slug, "-receiver-count-{}\", std::process::id());")]
        #[doc = concat!("let end = ", $open, "::create(&name, 1)?;")]
        /// let before = end.receiver_count();
        #[doc = concat!("let _rx = ", $receiver, "::open(&name)?;")]
        /// assert_eq!(end.receiver_count(), before + 1);
        /// shm::unlink(&name)?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn receiver_count(&self) -> usize {
            self.ep.receiver_count()
        }

        /// The channel's name.
        ///
        /// ```
        /// use conduit::shm;
        #[doc = concat!("let name = format!(\"doc-", $slug, "-name-{}\", std::process::id());")]
        #[doc = concat!("let end = ", $open, "::create(&name, 1)?;")]
        /// assert_eq!(end.name(), name);
        /// shm::unlink(&name)?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn name(&self) -> &str {
            self.ep.name()
        }

        /// Whether both handles use the same mapping (clones of one `open` or `create`).
        ///
        /// ```
        /// use conduit::shm;
        #[doc = concat!("let name = format!(\"doc-", $slug, "-same-channel-{}\", std::process::id());")]
        #[doc = concat!("let end = ", $open, "::create(&name, 1)?;")]
        /// assert!(end.same_channel(&end.clone()));
        #[doc = concat!("assert!(!end.same_channel(&", $open, "::open(&name)?));")]
        /// shm::unlink(&name)?;
        /// # Ok::<(), std::io::Error>(())
        /// ```
        pub fn same_channel(&self, other: &Self) -> bool {
            self.ep.same_mapping(&other.ep)
        }
    };
}
