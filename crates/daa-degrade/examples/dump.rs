use daa_degrade::*;
fn main() {
    let clean = UnpairedFolder::open("../../datasets/photos/train", true, SmallImagePolicy::ReflectPad, true).unwrap();
    let ds = SyntheticPairs::new(clean, Degradation::denoise_source()).unwrap();
    for i in 0..3 {
        let (x, y) = ds.patch(i, 64, &mut sample_rng(0, 0, i as u64)).unwrap();
        save_image(format!("/tmp/x{i}.png"), &x).unwrap();
        save_image(format!("/tmp/y{i}.png"), &y).unwrap();
        let mse: f32 = x.data().iter().zip(y.data()).map(|(a,b)| (a-b)*(a-b)).sum::<f32>() / x.data().len() as f32;
        println!("{i} rmse {}", mse.sqrt()*255.0);
    }
}
