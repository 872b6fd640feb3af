//! Resource values (`limits.memory`, `requests.cpu` with a divisor) and the Kubernetes
//! quantity parser behind them.

use k8s_openapi::api::core::v1::{Container, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tracing::debug;

use super::*;

/// kubelet's `ExtractContainerResourceValue`, except that a missing CPU, memory or
/// ephemeral-storage limit defines nothing (kubelet would use the node's allocatable amount).
pub(super) fn resource_value(
    container: &Container,
    var: &str,
    sel: &ResourceFieldSelector,
) -> Result<Option<String>, EnvError> {
    let unsupported = || EnvError::UnsupportedResource {
        var: var.to_owned(),
        resource: sel.resource.clone(),
    };
    let (kind, resource) = sel.resource.split_once('.').ok_or_else(unsupported)?;
    let resources = container.resources.as_ref();
    let amounts = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(unsupported()),
    };
    let is_cpu = resource == "cpu";
    let hugepages = resource.starts_with("hugepages-");
    if !(hugepages || matches!(resource, "cpu" | "memory" | "ephemeral-storage")) {
        return Err(unsupported());
    }
    let zero = Quantity(String::from("0"));
    let amount = match amounts.and_then(|a| a.get(resource)) {
        Some(amount) => amount,
        None if kind == "limits" && !hugepages => {
            debug!(var, resource = %sel.resource, "No limit set (kubelet would use the node's allocatable amount): left out");
            return Ok(None);
        }
        // kubelet reads a missing amount as zero.
        None => &zero,
    };
    // CPU is counted in millicores, the rest in units, both rounded up.
    let (scale, one) = if is_cpu { (3, 1000) } else { (0, 1) };
    let bad = |q: &Quantity| EnvError::BadQuantity {
        var: var.to_owned(),
        quantity: q.0.clone(),
    };
    let parse = |q: &Quantity| {
        let parsed = ParsedQuantity::parse(&q.0).and_then(|p| p.scaled_ceil(scale));
        parsed.ok_or_else(|| bad(q))
    };
    let value = parse(amount)?;
    let divisor = match &sel.divisor {
        // An unset or zero divisor means 1.
        None => one,
        Some(d) => match parse(d)? {
            0 => one,
            n if n > 0 => n,
            _ => return Err(bad(d)),
        },
    };
    Ok(Some(ceil_div(value, divisor).to_string()))
}

/// `a / b` rounded towards positive infinity, for `b > 0`.
pub(super) fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 {
        q + 1
    } else {
        q
    }
}

/// A Kubernetes quantity (`1.5Gi`, `100m`, `2e3`): `mantissa × 10^exp10 × 2^exp2`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ParsedQuantity {
    mantissa: i128,
    exp10: i32,
    exp2: u32,
}

impl ParsedQuantity {
    pub(super) fn parse(s: &str) -> Option<ParsedQuantity> {
        let (negative, rest) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(end);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return None;
        }
        let mut mantissa: i128 = 0;
        for digit in int.bytes().chain(frac.bytes()) {
            mantissa = mantissa
                .checked_mul(10)?
                .checked_add(i128::from(digit - b'0'))?;
        }
        if negative {
            mantissa = -mantissa;
        }
        let mut exp10 = -i32::try_from(frac.len()).ok()?;
        let mut exp2 = 0;
        match suffix {
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                let i = "KMGTPE".find(&suffix[..1])?;
                exp2 = 10 * (u32::try_from(i).ok()? + 1);
            }
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "" => {}
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            _ => {
                let exponent = suffix.strip_prefix(['e', 'E'])?;
                let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
                if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                exp10 = exp10.checked_add(exponent.parse().ok()?)?;
            }
        }
        Some(ParsedQuantity {
            mantissa,
            exp10,
            exp2,
        })
    }

    /// The value times `10^scale`, rounded up away from zero (Go's `Quantity.ScaledValue`).
    pub(super) fn scaled_ceil(&self, scale: i32) -> Option<i128> {
        let n = self.mantissa.checked_mul(2i128.checked_pow(self.exp2)?)?;
        let exp = self.exp10.checked_add(scale)?;
        if exp >= 0 {
            return n.checked_mul(10i128.checked_pow(exp.unsigned_abs())?);
        }
        let d = 10i128.checked_pow(exp.unsigned_abs())?;
        let magnitude = n.abs() / d + i128::from(n.abs() % d != 0);
        Some(if n < 0 { -magnitude } else { magnitude })
    }
}
