//! The smoltcp [`Device`] the core hands to the interface: at most one received packet (borrowed
//! from the driver's buffer, no copy), and a queue of packets to write out.

use smoltcp::phy::{
    Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken,
};
use smoltcp::time::Instant;

/// Buffers kept for reuse; beyond this, written buffers are freed.
const POOL_MAX: usize = 256;

/// Packets waiting to be written to the TUN device, plus spare buffers.
#[derive(Debug, Default)]
pub(crate) struct TxQueue {
    packets: Vec<Vec<u8>>,
    pool: Vec<Vec<u8>>,
}

impl TxQueue {
    fn push_with<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        let result = fill(&mut buf);
        self.packets.push(buf);
        result
    }

    pub(crate) fn take(&mut self, out: &mut Vec<Vec<u8>>) {
        out.append(&mut self.packets);
    }

    pub(crate) fn recycle(&mut self, written: &mut Vec<Vec<u8>>) {
        let room = POOL_MAX.saturating_sub(self.pool.len());
        self.pool.extend(written.drain(..).take(room));
        written.clear();
    }
}

/// One call's view of the device: see the module documentation.
pub(crate) struct Phy<'a> {
    rx: Option<&'a [u8]>,
    tx: &'a mut TxQueue,
    mtu: usize,
}

impl<'a> Phy<'a> {
    pub(crate) fn new(rx: Option<&'a [u8]>, tx: &'a mut TxQueue, mtu: usize) -> Self {
        Phy { rx, tx, mtu }
    }
}

pub(crate) struct Rx<'a>(&'a [u8]);

pub(crate) struct Tx<'a>(&'a mut TxQueue);

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.push_with(len, f)
    }
}

impl Device for Phy<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let packet = self.rx.take()?;
        Some((Rx(packet), Tx(self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        device_caps(self.mtu)
    }
}

/// Checksums smoltcp verifies on input: none, [`classify`] already did.
fn checksum_caps() -> ChecksumCapabilities {
    let mut caps = ChecksumCapabilities::default();
    caps.ipv4 = Checksum::Tx;
    caps.tcp = Checksum::Tx;
    caps.udp = Checksum::Tx;
    caps
}

pub(crate) fn device_caps(mtu: usize) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ip;
    caps.max_transmission_unit = mtu;
    caps.checksum = checksum_caps();
    caps
}
