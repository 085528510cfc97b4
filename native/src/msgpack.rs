//! The state's wire format: MessagePack exactly as msgspec writes the Python core's tuples
//! (smallest encoding of each integer), so changelogs and snapshots are the same bytes
//! whichever core wrote them (the differential tests compare them).

pub fn array(out: &mut Vec<u8>, len: usize) {
    if len < 16 {
        out.push(0x90 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

pub fn nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// An integer; None when msgpack cannot hold it (msgspec refuses those too).
pub fn int(out: &mut Vec<u8>, value: i128) -> Option<()> {
    match value {
        0..=127 => out.push(value as u8),
        128..=0xff => out.extend_from_slice(&[0xcc, value as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(value as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(value as u32).to_be_bytes());
        }
        0x1_0000_0000..=0xffff_ffff_ffff_ffff => {
            out.push(0xcf);
            out.extend_from_slice(&(value as u64).to_be_bytes());
        }
        -32..=-1 => out.push(value as i8 as u8),
        -128..=-33 => out.extend_from_slice(&[0xd0, value as i8 as u8]),
        -32768..=-129 => {
            out.push(0xd1);
            out.extend_from_slice(&(value as i16).to_be_bytes());
        }
        -2_147_483_648..=-32769 => {
            out.push(0xd2);
            out.extend_from_slice(&(value as i32).to_be_bytes());
        }
        _ if value >= i64::MIN as i128 && value < 0 => {
            out.push(0xd3);
            out.extend_from_slice(&(value as i64).to_be_bytes());
        }
        _ => return None,
    }
    Some(())
}

pub fn bin(out: &mut Vec<u8>, data: &[u8]) {
    let len = data.len();
    if len <= 0xff {
        out.extend_from_slice(&[0xc4, len as u8]);
    } else if len <= 0xffff {
        out.push(0xc5);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
}

pub fn str(out: &mut Vec<u8>, text: &str) {
    let len = text.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else if len <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(text.as_bytes());
}
