//! A minimal DNS client for A queries over UDP: enough to count answers and time them.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

/// An A query for `name` with `id`.
pub fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(64);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    packet
}

/// The id and first A record of an answer, if it is one.
pub fn parse_answer(packet: &[u8]) -> Option<(u16, Ipv4Addr)> {
    let id = u16::from_be_bytes([*packet.first()?, *packet.get(1)?]);
    let answers = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
    if answers == 0 {
        return None;
    }
    // The A record's data is the last four bytes when the answer holds one A record.
    let end = packet.len();
    let data = packet.get(end - 4..)?;
    Some((id, Ipv4Addr::new(data[0], data[1], data[2], data[3])))
}

/// One query from a fresh socket: the address answered and how long it took.
pub fn query(server: &str, name: &str, timeout: Duration) -> std::io::Result<(Ipv4Addr, Duration)> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(timeout))?;
    query_on(&socket, server, 1, name)
}

/// One query from `socket` with `id`.
pub fn query_on(
    socket: &UdpSocket,
    server: &str,
    id: u16,
    name: &str,
) -> std::io::Result<(Ipv4Addr, Duration)> {
    let started = Instant::now();
    socket.send_to(&a_query(id, name), server)?;
    let mut buffer = [0u8; 512];
    loop {
        let len = socket.recv(&mut buffer)?;
        if let Some((got, address)) = parse_answer(&buffer[..len]) {
            if got == id {
                return Ok((address, started.elapsed()));
            }
        }
    }
}
